"""Train one architecture and print what the README records: arch, epochs, wall time, params, test accuracy.

    python bench/train.py --arch seed_dense --epochs 10
    python bench/train.py                      # the default architecture with its own recipe

Runs without Django. The artifact goes to --out (default: a temporary directory, removed afterwards).
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.architectures import ARCHITECTURES, DEFAULT_ARCH, recipe_for  # noqa: E402
from classifier.ml.artifact import read_metadata  # noqa: E402
from classifier.ml.datasets import DatasetError, load_dataset  # noqa: E402
from classifier.ml.formats import format_duration  # noqa: E402
from classifier.ml.serving import configure_tensorflow  # noqa: E402
from classifier.ml.train import TrainingError, format_progress, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=list(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=None, help="default: the architecture's recipe")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="N images per split, for a smoke run")
    parser.add_argument(
        "--out", type=pathlib.Path, default=None, help="keep the artifact in this new directory"
    )
    args = parser.parse_args()

    print(configure_tensorflow())
    load_started = time.monotonic()
    dataset = load_dataset(
        args.dataset,
        datasets_dir=datasets_dir(),
        seed=args.seed,
        warn=lambda message: print(f"warning: {message}"),
    )
    if args.subset:
        dataset = dataset.subset(per_split=args.subset, seed=args.seed)
    print(
        f"{dataset.name}: {len(dataset.x_train)} train / {len(dataset.x_val)} val / "
        f"{len(dataset.x_test)} test images of {dataset.input_shape}, "
        f"loaded in {time.monotonic() - load_started:.1f}s"
    )

    with tempfile.TemporaryDirectory(prefix="vitrine-bench-") as scratch:
        out_dir = args.out or pathlib.Path(scratch) / args.arch
        started = time.monotonic()
        result = train(
            dataset=dataset,
            arch=args.arch,
            epochs=args.epochs,
            out_dir=out_dir,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=lambda event: print(format_progress(event), flush=True),
        )
        wall = time.monotonic() - started
        metadata = read_metadata(result.artifact_dir)

    epochs = args.epochs or recipe_for(args.arch).epochs
    print()
    print(f"arch           {args.arch}")
    print(f"dataset        {dataset.name}")
    print(f"epochs         {epochs}")
    print(f"batch size     {metadata['batch_size']}")
    print(f"precision      {metadata['precision']}")
    print(f"params         {metadata['params']:,}")
    print(f"wall time      {wall:.1f}s ({format_duration(wall)}, training + evaluation + saving)")
    print(
        f"val accuracy   {result.metrics['val_accuracy']:.4f}"
        if result.metrics["val_accuracy"] is not None
        else "val accuracy   -"
    )
    print(f"test accuracy  {result.metrics['test_accuracy']:.4f} ({result.metrics['test_images']} images)")
    if args.out:
        print(f"artifact       {result.artifact_dir}")


if __name__ == "__main__":
    try:
        main()
    except (DatasetError, TrainingError) as error:
        sys.exit(f"error: {error}")
