"""Does the review queue propose a new category for photos of a kind the model was not taught?

    python bench/propose_categories.py [--similarity 0.65] [--min-photos 3]

Simulated on clothing-small with the starter's backbone features (bench/starter_features.py): each category in
turn is left out, as a category the shop sells but the model never learned. The out-of-distribution check
(classifier.ml.ood, the starter's recipe: fitted on train/ without that category, threshold from out-of-fold
scores at the starter's keep rate) flags validation/ photos as "not one of your categories". The review
queue's unfamiliar photos are then grouped as the admin groups them (classifier.ml.clusters on the photos'
normalised embeddings), two ways:
  - all: every validation photo of the left-out category waits, beside the other categories' flagged photos;
  - flagged: only the left-out category's photos the check flags wait (what the shop would see today).
Reported, pooled over the left-out categories: the share of the left-out category's waiting photos that land
in a proposal, and the purity of the proposals (share of each proposal's photos from its most common
category). Data sets: $VITRINE_DATASETS_DIR, else ../shared/datasets.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from bench.starter_features import STARTER_DIR, starter_features  # noqa: E402
from classifier.ml.clusters import alike_groups  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.ood import fit_ood  # noqa: E402
from classifier.ml.serving import embeddings_normalised  # noqa: E402
from classifier.ml.starter import SUMMARY_FILE  # noqa: E402
from classifier.ml.starter.build import FOLDS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--similarity", type=float, default=0.65)
    parser.add_argument("--min-photos", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    data = starter_features(datasets_dir())
    keep_rate = json.loads((STARTER_DIR / SUMMARY_FILE).read_text())["ood"]["keep_rate"]
    embeddings = embeddings_normalised(data.x_val).astype(np.float32)
    print(
        f"clothing-small: {len(data.y_train)} train photos, {len(data.y_val)} validation photos; "
        f"OOD keep rate {keep_rate:.0%}; proposals: >= {args.min_photos} photos, "
        f"mean pairwise similarity >= {args.similarity}"
    )
    totals = {way: {"waiting": 0, "landed": 0, "in_proposals": 0, "pure": 0} for way in ("all", "flagged")}
    seconds = []
    print(
        f"\n{'left out':<12} {'photos':>6} {'flagged':>7} {'others flagged':>14}  {'all: landed / pure':>19}"
        f"  {'flagged: landed / pure':>22}"
    )
    for left_out, name in enumerate(data.class_names):
        known = data.y_train != left_out
        x_known, y_known = data.x_train[known], data.y_train[known]
        y_known = y_known - (y_known > left_out)
        folds = data.folds[known]
        oof = np.zeros(len(y_known))
        for fold in range(FOLDS):
            held = folds == fold
            oof[held] = fit_ood(x_known[~held], y_known[~held]).scores(x_known[held])
        ood = fit_ood(x_known, y_known).with_threshold(oof, keep_rate=keep_rate)
        flagged = ood.is_unfamiliar(ood.scores(data.x_val))
        mine = data.y_val == left_out
        others = flagged & ~mine
        row = f"{name:<12} {int(mine.sum()):>6} {int((flagged & mine).sum()):>7} {int(others.sum()):>14}"
        for way, waiting_mine in (("all", mine), ("flagged", flagged & mine)):
            queue = np.flatnonzero(waiting_mine | others)
            started = time.monotonic()
            groups = alike_groups(embeddings[queue], similarity=args.similarity, min_size=args.min_photos)
            seconds.append((len(queue), time.monotonic() - started))
            labels = [data.y_val[queue[group]] for group in groups]
            landed = sum(int((group_labels == left_out).sum()) for group_labels in labels)
            in_proposals = sum(len(group_labels) for group_labels in labels)
            pure = sum(int(np.bincount(group_labels).max()) for group_labels in labels)
            counts = totals[way]
            counts["waiting"] += int(waiting_mine.sum())
            counts["landed"] += landed
            counts["in_proposals"] += in_proposals
            counts["pure"] += pure
            share = landed / waiting_mine.sum() if waiting_mine.any() else 0.0
            purity = pure / in_proposals if in_proposals else 1.0
            row += f"  {share:>10.1%} / {purity:>6.1%}"
            row += "    " if way == "all" else ""
        print(row)
    print()
    for way, counts in totals.items():
        print(
            f"{way:<8}: {counts['landed']}/{counts['waiting']} left-out photos land in a proposal "
            f"({counts['landed'] / max(counts['waiting'], 1):.1%}); proposals "
            f"{counts['pure'] / max(counts['in_proposals'], 1):.1%} pure ({counts['in_proposals']} photos)"
        )
    flagged, every = totals["flagged"], totals["all"]
    print(
        f"the check flags {flagged['waiting']}/{every['waiting']} left-out photos "
        f"({flagged['waiting'] / max(every['waiting'], 1):.1%}): end to end "
        f"{flagged['landed'] / max(every['waiting'], 1):.1%} of a new category's photos reach a proposal"
    )
    largest, took = max(seconds)
    print(f"grouping took at most {took * 1000:.0f} ms (queue of {largest} photos)")


if __name__ == "__main__":
    main()
