"""Inference speed of a trained model, loaded once: batch-1 latency and batch-64 throughput.

    python bench/inference.py --model var/models/fashion-cnn
    python bench/inference.py                # trains a quick 1-epoch model of --arch first

Compares the serving path (classifier.ml.serving.Classifier: a compiled direct model call), a plain eager
`model(x, training=False)`, `predict_on_batch` and `model.predict`. Runs without Django.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.architectures import ARCHITECTURES, DEFAULT_ARCH  # noqa: E402
from classifier.ml.datasets import load_dataset  # noqa: E402
from classifier.ml.serving import Classifier, configure_tensorflow  # noqa: E402
from classifier.ml.train import train  # noqa: E402

WARMUP_CALLS = 10


def timings(call: Callable[[], object], *, calls: int) -> np.ndarray:
    for _ in range(WARMUP_CALLS):
        call()
    seconds = np.empty(calls)
    for index in range(calls):
        started = time.perf_counter()
        call()
        seconds[index] = time.perf_counter() - started
    return seconds


def report(name: str, *, single: np.ndarray, batch: np.ndarray, batch_size: int) -> None:
    p50, p95 = np.percentile(single, [50, 95]) * 1000
    throughput = batch_size / np.median(batch)
    print(f"{name:<38}{p50:>9.2f}{p95:>9.2f}{throughput:>14,.0f}")


def quick_model(*, arch: str, out_dir: pathlib.Path) -> pathlib.Path:
    dataset = load_dataset("fashion-mnist", datasets_dir=datasets_dir()).subset(per_split=1000, seed=0)
    print(f"training a quick {arch} (1 epoch on {len(dataset.x_train)} Fashion-MNIST images)...", flush=True)
    return train(dataset=dataset, arch=arch, epochs=1, out_dir=out_dir).artifact_dir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=pathlib.Path, default=None, help="artifact directory")
    parser.add_argument(
        "--arch", default=DEFAULT_ARCH, choices=list(ARCHITECTURES), help="for the quick model"
    )
    parser.add_argument("--calls", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=None, help="TensorFlow threads (default: all cores owned)"
    )
    args = parser.parse_args()

    print(configure_tensorflow(threads=args.threads))
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-") as scratch:
        model_dir = args.model or quick_model(arch=args.arch, out_dir=pathlib.Path(scratch) / "model")
        loading_started = time.perf_counter()
        classifier = Classifier.load(model_dir)
        loaded_in = time.perf_counter() - loading_started
    model = classifier.model
    print(
        f"model: {classifier.metadata['architecture']} {classifier.input_shape}, "
        f"{model.count_params():,} params, loaded once in {loaded_in:.2f}s"
    )

    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, *classifier.input_shape), dtype=np.uint8)
    many = rng.integers(0, 256, (args.batch_size, *classifier.input_shape), dtype=np.uint8)
    one_float, many_float = one.astype(np.float32), many.astype(np.float32)
    photo = Image.fromarray(rng.integers(0, 256, (600, 450, 3), dtype=np.uint8))

    print(f"\n{'path':<38}{'p50 ms':>9}{'p95 ms':>9}{f'img/s @{args.batch_size}':>14}")
    report(
        "serving Classifier.predict_arrays",
        single=timings(lambda: classifier.predict_arrays(one), calls=args.calls),
        batch=timings(lambda: classifier.predict_arrays(many), calls=max(20, args.calls // 10)),
        batch_size=args.batch_size,
    )
    report(
        "direct model(x, training=False)",
        single=timings(lambda: model(one_float, training=False), calls=args.calls),
        batch=timings(lambda: model(many_float, training=False), calls=max(20, args.calls // 10)),
        batch_size=args.batch_size,
    )
    report(
        "model.predict_on_batch",
        single=timings(lambda: model.predict_on_batch(one_float), calls=args.calls),
        batch=timings(lambda: model.predict_on_batch(many_float), calls=max(20, args.calls // 10)),
        batch_size=args.batch_size,
    )
    report(
        "model.predict (for comparison)",
        single=timings(lambda: model.predict(one_float, verbose=0), calls=max(20, args.calls // 4)),
        batch=timings(
            lambda: model.predict(many_float, batch_size=args.batch_size, verbose=0),
            calls=max(20, args.calls // 10),
        ),
        batch_size=args.batch_size,
    )
    photos = [photo] * args.batch_size
    report(
        "predict_images (600x450 photo, +prep)",
        single=timings(lambda: classifier.predict_images([photo]), calls=max(20, args.calls // 4)),
        batch=timings(lambda: classifier.predict_images(photos), calls=max(10, args.calls // 20)),
        batch_size=args.batch_size,
    )


if __name__ == "__main__":
    main()
