"""Scores a trained model on any labelled photo folder, as the shop would see it on new uploads.

    python bench/real_photos.py ../shared/datasets/clothing-small/validation --model var/models/NAME
    python bench/real_photos.py DIR            # the active version, via Django (config.settings.local)
    python bench/real_photos.py DIR --model PATH --threshold 0.9

DIR holds DIR/<category>/*.jpg with category names the model knows. Prints accuracy, per-category precision,
recall and F1, the confusion matrix, and the precision and coverage of the labels filed automatically at the
threshold: --threshold, else the active version's own threshold (when the model came from Django), else the
threshold the artifact suggested when it was trained (picked on its test split, never on DIR).
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from classifier.ml.artifact import ArtifactError  # noqa: E402
from classifier.ml.calibration import apply_temperature  # noqa: E402
from classifier.ml.evaluate import (  # noqa: E402
    classification_report,
    confusion_matrix,
    format_report,
    predict_probabilities,
)
from classifier.ml.formats import format_duration  # noqa: E402
from classifier.ml.preprocess import ImageError, open_image, to_array  # noqa: E402
from classifier.ml.serving import Classifier, configure_tensorflow  # noqa: E402

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


class BenchError(Exception):
    """Something the person running the bench must fix; printed as one line."""


def active_model() -> tuple[pathlib.Path, float, str]:
    """The active ModelVersion's artifact directory and threshold, read through Django."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    try:
        import django

        django.setup()
        from django.conf import settings

        from classifier.selectors import model_version_active
        from classifier.services.model_versions import model_version_threshold

        version = model_version_active()
    except Exception as error:  # settings, database or app import: any of them means "no active model here"
        raise BenchError(
            f"cannot find the active model through Django ({os.environ['DJANGO_SETTINGS_MODULE']}): "
            f"{' '.join(str(error).split()) or type(error).__name__}; pass --model ARTIFACT_DIR"
        ) from None
    if version is None:
        raise BenchError("no model version is active; activate one in the admin or pass --model ARTIFACT_DIR")
    path = pathlib.Path(settings.VITRINE_MODELS_DIR) / version.artifact_path
    return path, model_version_threshold(model_version=version), f"active version {version.name}"


def labelled_photos(
    folder: pathlib.Path, *, class_names: list[str], input_shape: tuple[int, int, int], style: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pixels and category indices of DIR/<category>/* photos; unreadable files skipped with a warning."""
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such folder (expected DIR/<category>/*.jpg)")
    category_folders = sorted(
        path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    if not category_folders:
        raise BenchError(f"{folder}: no category folders (expected DIR/<category>/*.jpg)")
    unknown = [path.name for path in category_folders if path.name not in class_names]
    if unknown:
        raise BenchError(
            f"{folder}: categories the model does not know: {', '.join(unknown)} "
            f"(it knows: {', '.join(class_names)})"
        )
    pixels, labels, skipped = [], [], []
    for category_folder in category_folders:
        for path in sorted(category_folder.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES:
                continue
            try:
                pixels.append(to_array(open_image(path), input_shape=input_shape, style=style))
            except ImageError as error:
                print(f"warning: skipped {error}", file=sys.stderr)
                skipped.append(str(path.relative_to(folder)))
                continue
            labels.append(class_names.index(category_folder.name))
    if not pixels:
        raise BenchError(f"{folder}: no readable photos")
    return np.stack(pixels), np.asarray(labels, dtype=np.int64), skipped


def format_confusion(matrix: np.ndarray, *, class_names: list[str]) -> str:
    corner = "true \\ predicted"
    first = max(len(corner), *(len(name) for name in class_names))
    width = max(5, *(len(name) for name in class_names))
    lines = [f"{corner:>{first}}  " + " ".join(f"{name:>{width}}" for name in class_names)]
    lines += [
        f"{name:>{first}}  " + " ".join(f"{count:>{width}d}" for count in row)
        for name, row in zip(class_names, matrix, strict=True)
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=pathlib.Path, help="labelled photos: DIR/<category>/*.jpg")
    parser.add_argument("--model", type=pathlib.Path, help="artifact directory (default: the active version)")
    parser.add_argument("--threshold", type=float, help="confidence at or above which labels are filed")
    args = parser.parse_args()
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be between 0 and 1, not {args.threshold}")

    try:
        threshold, threshold_source = args.threshold, "--threshold"
        if args.model is None:
            model_dir, version_threshold, model_source = active_model()
            if threshold is None:
                threshold, threshold_source = version_threshold, "the active version's threshold"
        else:
            model_dir, model_source = args.model, "--model"
        print(configure_tensorflow())
        classifier = Classifier.load(model_dir)
        suggested = classifier.metadata.get("metrics", {}).get("suggested_threshold")
        if threshold is None and suggested is None:
            raise BenchError(f"{model_dir}: the artifact suggests no threshold; pass --threshold")
        if threshold is None:
            threshold, threshold_source = suggested, "suggested by the artifact, picked on its test split"
        x, y, skipped = labelled_photos(
            args.folder,
            class_names=classifier.class_names,
            input_shape=classifier.input_shape,
            style=classifier.style,
        )
    except (BenchError, ArtifactError) as error:
        sys.exit(f"error: {error}")

    metadata = classifier.metadata
    print(
        f"model: {model_dir} ({model_source}; {metadata['architecture']}, {len(classifier.class_names)} "
        f"categories, created {metadata.get('created_at', '?')})"
    )
    if "seconds" in metadata:
        print(
            f"trained in {format_duration(metadata['seconds'])} ({metadata['seconds']:.0f} s) on "
            f"{metadata.get('machine', 'a machine the artifact does not name')}"
        )
    print(f"photos: {len(y)} from {args.folder}{f' ({len(skipped)} skipped)' if skipped else ''}")
    started = time.monotonic()
    # Calibrated as serving calibrates them, so the artifact's threshold means the same here.
    probabilities = apply_temperature(
        predict_probabilities(model=classifier.model, x=x), temperature=classifier.temperature
    )
    seconds = time.monotonic() - started
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    matrix = confusion_matrix(y_true=y, y_pred=predicted, num_classes=len(classifier.class_names))
    report = classification_report(matrix=matrix, class_names=classifier.class_names)
    correct = predicted == y
    print(f"scored in {seconds:.1f}s ({len(y) / seconds:.1f} photos/s)")
    print()
    print(f"accuracy: {report['accuracy']:.2%} ({int(correct.sum())}/{len(y)})")
    print()
    print(format_report(report))
    print(format_confusion(matrix, class_names=classifier.class_names))
    print()
    filed = confidence >= threshold
    precision = float(correct[filed].mean()) if filed.any() else 1.0
    print(f"threshold {threshold:.4f} ({threshold_source}):")
    print(
        f"  filed automatically: {int(filed.sum())}/{len(y)} (coverage {filed.mean():.2%}), "
        f"precision {precision:.2%} ({int(correct[filed].sum())} right, {int((~correct[filed]).sum())} wrong)"
    )
    print(
        f"  left for review: {int((~filed).sum())} "
        f"(of which the model had {int((~correct[~filed]).sum())} wrong)"
    )


if __name__ == "__main__":
    main()
