"""How the starter model treats photos that are not products, and what the out-of-distribution check costs.

    python bench/out_of_distribution.py             # assembles the starter model in a temporary folder
    python bench/out_of_distribution.py --model var/models/NAME

Prints, for the non-product photos in tests/fixtures/non_product/, each one's category, calibrated confidence
and OOD score, and the share filed automatically (goal 0 %: a photo flagged unfamiliar or below the threshold
is not filed); then, on clothing-small/validation, the coverage and precision at the model's threshold with
and without the OOD check. The data sets folder is $VITRINE_DATASETS_DIR, else ../shared/datasets.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.machine import cpu_flags_line  # noqa: E402
from classifier.ml.preprocess import open_image  # noqa: E402
from classifier.ml.serving import Classifier, Prediction, configure_tensorflow  # noqa: E402
from classifier.ml.starter.assemble import assemble_starter_artifact  # noqa: E402
from classifier.ml.starter.build import MAX_CHECKS_COVERAGE_COST  # noqa: E402

NON_PRODUCT_DIR = REPO / "tests" / "fixtures" / "non_product"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def filed(prediction: Prediction, *, threshold: float, use_ood: bool = True) -> bool:
    return prediction.confidence >= threshold and not (use_ood and prediction.is_unfamiliar)


def photos_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in PHOTO_SUFFIXES)


def score(classifier: Classifier, paths: list[pathlib.Path]) -> tuple[list[Prediction], float]:
    images = [open_image(path) for path in paths]
    started = time.monotonic()
    predictions = classifier.predict_images(images)
    return predictions, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=pathlib.Path, help="an artifact directory (default: the starter model)"
    )
    parser.add_argument("--datasets-dir", type=pathlib.Path, default=datasets_dir())
    args = parser.parse_args()
    print(configure_tensorflow(), "|", cpu_flags_line())

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if model_dir is None:
            started = time.monotonic()
            model_dir = assemble_starter_artifact(out_dir=pathlib.Path(scratch) / "starter")
            print(f"assembled the starter model in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        classifier = Classifier.load(model_dir)
        print(f"loaded {model_dir} in {time.monotonic() - started:.1f}s")
    threshold = float(classifier.metadata["metrics"]["suggested_threshold"])
    ood = classifier.ood
    print(
        f"threshold {threshold:.4f} (calibrated, temperature {classifier.temperature:.3f}); OOD threshold "
        + (f"{ood.threshold:.1f} (keeps {ood.keep_rate:.0%} of held-out known photos)" if ood else "none")
    )

    paths = photos_in(NON_PRODUCT_DIR)
    predictions, seconds = score(classifier, paths)
    print(f"\nnon-product photos: {len(paths)} from {NON_PRODUCT_DIR.relative_to(REPO)} ({seconds:.1f}s)")
    for path, prediction in zip(paths, predictions, strict=True):
        ood_text = "n/a" if prediction.ood_score is None else f"{prediction.ood_score:9.1f}"
        verdict = "FILED" if filed(prediction, threshold=threshold) else "not filed"
        print(
            f"  {path.name:<18} {prediction.label:<11} {prediction.confidence:6.1%}  OOD {ood_text}"
            f"{'  unfamiliar' if prediction.is_unfamiliar else '            '}  {verdict}"
        )
    wrongly_filed = sum(filed(prediction, threshold=threshold) for prediction in predictions)
    print(f"filed automatically: {wrongly_filed}/{len(paths)} ({wrongly_filed / len(paths):.0%}; goal 0 %)")
    without_ood = sum(filed(prediction, threshold=threshold, use_ood=False) for prediction in predictions)
    print(f"  without the OOD check it would be {without_ood}/{len(paths)}")

    validation = args.datasets_dir / "clothing-small" / "validation"
    if not validation.is_dir():
        print(f"\n{validation} not found: skipping the in-distribution figures")
        return
    labelled = [(path, path.parent.name) for path in photos_in(validation)]
    predictions, seconds = score(classifier, [path for path, _ in labelled])
    correct = np.array([p.label == label for p, (_, label) in zip(predictions, labelled, strict=True)])
    print(
        f"\nclothing-small/validation: {len(labelled)} photos "
        f"({seconds:.1f}s, {len(labelled) / seconds:.1f}/s)"
    )
    print(f"top-1 {correct.mean():.2%}, unfamiliar {np.mean([p.is_unfamiliar for p in predictions]):.2%}")
    coverages = {}
    for use_ood in (False, True):
        chosen = np.array([filed(p, threshold=threshold, use_ood=use_ood) for p in predictions])
        coverages[use_ood] = chosen.mean()
        precision = correct[chosen].mean() if chosen.any() else 1.0
        print(
            f"  {'with' if use_ood else 'without':<7} the OOD check: coverage {chosen.mean():.2%}, "
            f"precision {precision:.2%} "
            f"({int(correct[chosen].sum())} right, {int((~correct[chosen]).sum())} wrong)"
        )
    print(
        f"the OOD checks (far-off and unknown kind) cost {100 * (coverages[False] - coverages[True]):.1f} pp "
        f"of coverage (the build allows {MAX_CHECKS_COVERAGE_COST:.0%} on held-out train)"
    )


if __name__ == "__main__":
    main()
