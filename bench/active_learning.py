"""What to label next, simulated on clothing-small: labels chosen by the review queue's order against labels
chosen at random.

    python bench/active_learning.py [--seeds 0 1 2] [--start 0.10] [--labels 100]

For each seed: --start of train/ (stratified by category) is labelled and a head (the starter's recipe:
softmax regression on the starter backbone's features) is fitted on it; the rest of train/ is the review
queue, with the head's confidences and the photos' embeddings as the catalog stores them. --labels photos are
then labelled (their true category revealed), chosen three ways: the review queue's "most useful first" order
(classifier.ml.active: margin uncertainty with diversity), margin uncertainty alone, and at random. The head
is refitted on each enlarged set and scored on validation/, which chose nothing. Data sets:
$VITRINE_DATASETS_DIR, else ../shared/datasets.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from bench.starter_features import starter_features  # noqa: E402
from classifier.ml.active import label_next_order, margin_uncertainty  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.serving import embeddings_normalised  # noqa: E402
from classifier.ml.starter.build import fit_linear_head, head_probabilities  # noqa: E402


def stratified_start(y: np.ndarray, *, share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of `share` of each category (at least one photo of each)."""
    chosen = []
    for label in np.unique(y):
        mine = np.flatnonzero(y == label)
        chosen.append(rng.choice(mine, size=max(1, round(share * len(mine))), replace=False))
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--start", type=float, default=0.10, help="share of train/ labelled at the start")
    parser.add_argument("--labels", type=int, default=100, help="labels added by each strategy")
    args = parser.parse_args()
    print(machine_line())
    data = starter_features(datasets_dir())
    classes, l2 = len(data.class_names), data.setting["l2"]
    embeddings = embeddings_normalised(data.x_train).astype(np.float32)

    def accuracy(labelled: np.ndarray) -> float:
        weights, bias = fit_linear_head(
            data.x_train[labelled], data.y_train[labelled], num_classes=classes, l2=l2
        )
        return float(
            (head_probabilities(data.x_val, weights=weights, bias=bias).argmax(axis=1) == data.y_val).mean()
        )

    strategies = ("most useful first", "uncertainty only", "random")
    results = {name: [] for name in strategies}
    print(
        f"clothing-small: {len(data.y_train)} train photos (the pool), {len(data.y_val)} validation photos "
        "score; "
        f"start {args.start:.0%} labelled, +{args.labels} labels; starter setting {data.setting}"
    )
    print(f"\n{'seed':>4} {'start':>6} {'start acc':>9}  " + "  ".join(f"{name:>17}" for name in strategies))
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        labelled = stratified_start(data.y_train, share=args.start, rng=rng)
        pool = np.setdiff1d(np.arange(len(data.y_train)), labelled)
        weights, bias = fit_linear_head(
            data.x_train[labelled], data.y_train[labelled], num_classes=classes, l2=l2
        )
        uncertainty = margin_uncertainty(head_probabilities(data.x_train[pool], weights=weights, bias=bias))
        picks = {
            "most useful first": pool[
                label_next_order(uncertainty, embeddings[pool], window=args.labels)[: args.labels]
            ],
            "uncertainty only": pool[label_next_order(uncertainty, None, window=0)[: args.labels]],
            "random": rng.choice(pool, size=args.labels, replace=False),
        }
        row = {name: accuracy(np.concatenate([labelled, picked])) for name, picked in picks.items()}
        for name, value in row.items():
            results[name].append(value)
        print(
            f"{seed:>4} {len(labelled):>6} {accuracy(labelled):>9.1%}  "
            + "  ".join(f"{row[name]:>17.1%}" for name in strategies)
        )
    print(
        f"{'mean':>4} {'':>6} {'':>9}  "
        + "  ".join(f"{np.mean(results[name]):>17.1%}" for name in strategies)
    )
    print(
        f"{'sd':>4} {'':>6} {'':>9}  "
        + "  ".join(f"{np.std(results[name], ddof=1) * 100:>15.1f}pp" for name in strategies)
    )
    gain = (np.array(results["most useful first"]) - np.array(results["random"])) * 100
    per_seed = ", ".join(f"{g:+.1f}" for g in gain)
    print(f"\nmost useful first vs random: {gain.mean():+.1f} pp on average (per seed: {per_seed})")


if __name__ == "__main__":
    main()
