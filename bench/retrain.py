"""Retraining times on clothing-small: full with a cold feature cache, full with a warm one, and quick after
new photos (the README's "Measured figures").

    python bench/retrain.py                  # all three, about half an hour on 2 cores
    python bench/retrain.py --quick-only     # one full run to start from (cold cache), then the quick one
    python bench/retrain.py --quick-only --features-dir var/bench/features   # the second time: warm

The full runs train on the training photos less the last --new ones; the quick run starts from the warm full
run's model and adds them, as after a few corrections in the review queue. Each line names the validation
(clothing-small/validation) and held-out test (carved from train) accuracy. Runs without Django; the models
go to a temporary directory, removed afterwards, and so does the cache unless --features-dir names a folder
to keep it in (a full run's label then says whether the cache was cold or warm).
"""

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.architectures import recipe_for  # noqa: E402
from classifier.ml.artifact import read_metadata  # noqa: E402
from classifier.ml.datasets import Dataset, DatasetError, load_dataset  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.serving import configure_tensorflow  # noqa: E402
from classifier.ml.train import TrainingError, TrainResult, train, train_quick  # noqa: E402

ARCH = "effnet_lite2"
DATASET = "clothing-small"


def without_last(dataset: Dataset, count: int) -> Dataset:
    return dataclasses.replace(dataset, x_train=dataset.x_train[:-count], y_train=dataset.y_train[:-count])


def cache_label(result: TrainResult, *, cache_was_empty: bool) -> str:
    if cache_was_empty:
        return "full, cold cache"
    computed = read_metadata(result.artifact_dir)["backbone"]["activations_computed"]
    return "full, warm cache" if computed == 0 else f"full, cache lacked {computed} views"


def line(label: str, result: TrainResult, wall: float) -> str:
    backbone = read_metadata(result.artifact_dir)["backbone"] or {}
    return (
        f"{label:<28} {wall:7.1f}s  val {result.metrics['val_accuracy']:.2%}  "
        f"held-out test {result.metrics['test_accuracy']:.2%}  "
        f"activations computed {backbone.get('activations_computed', '-')}  "
        f"features stage {backbone.get('feature_seconds', '-')}s  "
        + (
            f"model features computed {backbone['model_features_computed']}"
            if "model_features_computed" in backbone
            else f"model features kept for quick runs in {backbone.get('model_features_seconds', '-')}s"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new", type=int, default=20, help="photos the quick run adds (default 20)")
    parser.add_argument(
        "--quick-only",
        action="store_true",
        help="one full run (cold cache) to start from, then the quick one",
    )
    parser.add_argument(
        "--features-dir",
        type=pathlib.Path,
        default=None,
        help="keep the feature cache in this folder (default: a temporary one, so the first run starts cold)",
    )
    args = parser.parse_args()
    print(configure_tensorflow())
    print(machine_line())
    side = recipe_for(ARCH).image_side
    dataset = load_dataset(DATASET, datasets_dir=datasets_dir(), image_size=(side, side))
    before = without_last(dataset, args.new)
    print(
        f"{dataset.name}: {len(before.x_train)} train (+{args.new} for the quick run) / "
        f"{len(dataset.x_val)} val / {len(dataset.x_test)} test photos at {side}px"
    )
    lines = []
    with tempfile.TemporaryDirectory(prefix="vitrine-retrain-") as scratch:
        features_dir = args.features_dir or pathlib.Path(scratch) / "features"
        full = None
        for number in range(1 if args.quick_only else 2):
            cache_was_empty = not features_dir.is_dir() or not any(features_dir.iterdir())
            started = time.monotonic()
            full = train(
                dataset=before,
                arch=ARCH,
                epochs=None,
                out_dir=pathlib.Path(scratch) / f"full-{number}",
                features_dir=features_dir,
            )
            label = cache_label(full, cache_was_empty=cache_was_empty)
            lines.append(line(label, full, time.monotonic() - started))
            print(lines[-1], flush=True)
        started = time.monotonic()
        quick = train_quick(
            dataset=dataset,
            base_dir=full.artifact_dir,
            epochs=None,
            out_dir=pathlib.Path(scratch) / "quick",
            features_dir=features_dir,
        )
        lines.append(line(f"quick, {args.new} new photos", quick, time.monotonic() - started))
    print()
    print(machine_line())
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except (DatasetError, TrainingError) as error:
        sys.exit(f"error: {error}")
