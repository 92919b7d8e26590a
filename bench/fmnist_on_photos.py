"""How well a Fashion-MNIST model recognises real product photos, for the categories the two share.

    python bench/fmnist_on_photos.py --model var/models/fashion-cnn
    python bench/fmnist_on_photos.py --model DIR --photos /path/to/clothing-small/validation

Scores every photo of clothing-small/validation whose category Fashion-MNIST also has (t-shirt, pants, dress,
outwear, shirt, shoes; shoes count as right when the model says Sandal, Sneaker or Ankle boot) twice: through
the "fashion-mnist" bridge preprocessing the model serves with, and through plain resizing ("photo" style:
pad with white, resize, grayscale) for comparison. Prints per-category and overall accuracy. No Django needed.
"""

import argparse
import collections
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import datasets_dir  # noqa: E402
from classifier.ml.artifact import ArtifactError  # noqa: E402
from classifier.ml.preprocess import ImageError, open_image, prepare_batch  # noqa: E402
from classifier.ml.serving import Classifier, configure_tensorflow  # noqa: E402

# Photo folder -> the Fashion-MNIST categories that count as a right answer for it.
SHARED_CATEGORIES = {
    "t-shirt": {"T-shirt/top"},
    "pants": {"Trouser"},
    "dress": {"Dress"},
    "outwear": {"Coat"},
    "shirt": {"Shirt"},
    "shoes": {"Sandal", "Sneaker", "Ankle boot"},
}
PREPROCESSING = {"bridge": "fashion-mnist", "plain resize": "photo"}


class BenchError(Exception):
    """Inputs this benchmark cannot use; printed as one line."""


def load_photos(folder: pathlib.Path) -> tuple[list, list[str]]:
    photos, categories = [], []
    for category in SHARED_CATEGORIES:
        category_folder = folder / category
        if not category_folder.is_dir():
            raise BenchError(
                f"{category_folder}: missing (expected the clothing-small layout DIR/<category>/*.jpg)"
            )
        for path in sorted(category_folder.iterdir()):
            try:
                photos.append(open_image(path, name=str(path.relative_to(folder))))
            except ImageError as error:
                print(f"skipped {error}", file=sys.stderr)
                continue
            categories.append(category)
    return photos, categories


def score(
    classifier: Classifier, *, photos: list, categories: list[str], style: str
) -> tuple[np.ndarray, list[str]]:
    """(right or wrong per photo, predicted category per photo)."""
    pixels = prepare_batch(photos, input_shape=classifier.input_shape, style=style)
    predicted = [prediction.label for prediction in classifier.predict_arrays(pixels, top_k=1)]
    right = np.array(
        [label in SHARED_CATEGORIES[category] for label, category in zip(predicted, categories, strict=True)]
    )
    return right, predicted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=pathlib.Path, required=True, help="Fashion-MNIST artifact directory")
    parser.add_argument(
        "--photos",
        type=pathlib.Path,
        default=datasets_dir() / "clothing-small" / "validation",
        help="folder of product photos by category (default: clothing-small/validation)",
    )
    args = parser.parse_args()

    print(configure_tensorflow())
    classifier = Classifier.load(args.model)
    wanted = set().union(*SHARED_CATEGORIES.values())
    if not wanted <= set(classifier.class_names):
        raise BenchError(
            f"{args.model}: not a Fashion-MNIST model (categories {', '.join(classifier.class_names)})"
        )
    if not args.photos.is_dir():
        raise BenchError(f"{args.photos}: no such photo folder")
    metadata = classifier.metadata
    test_accuracy = metadata.get("metrics", {}).get("test_accuracy", float("nan"))
    print(
        f"model: {metadata['architecture']}, {metadata.get('epochs')} epochs, Fashion-MNIST test accuracy "
        f"{test_accuracy:.4f}, input {classifier.input_shape}"
    )
    started = time.perf_counter()
    photos, categories = load_photos(args.photos)
    print(f"photos: {len(photos)} in {args.photos} for the {len(SHARED_CATEGORIES)} shared categories")

    results = {}
    for name, style in PREPROCESSING.items():
        results[name] = score(classifier, photos=photos, categories=categories, style=style)
    category_of = np.array(categories)

    header = f"{'category':<10}{'photos':>7}" + "".join(f"{name:>14}" for name in PREPROCESSING)
    print(f"\n{header}   most often predicted (bridge)")
    per_category = collections.defaultdict(dict)
    for category, correct_labels in SHARED_CATEGORIES.items():
        mask = category_of == category
        row = f"{category:<10}{int(mask.sum()):>7}"
        for name, (right, _) in results.items():
            per_category[name][category] = float(right[mask].mean()) if mask.any() else float("nan")
            row += f"{per_category[name][category]:>14.1%}"
        bridge_predictions = collections.Counter(np.array(results["bridge"][1])[mask].tolist())
        common = ", ".join(f"{label} {count}" for label, count in bridge_predictions.most_common(2))
        print(f"{row}   {common}  (right: {' / '.join(sorted(correct_labels))})")
    overall = f"{'overall':<10}{len(photos):>7}" + "".join(
        f"{right.mean():>14.1%}" for right, _ in results.values()
    )
    mean = f"{'per-cat.':<10}{'':>7}" + "".join(
        f"{np.nanmean(list(per_category[name].values())):>14.1%}" for name in PREPROCESSING
    )
    print(overall)
    print(f"{mean}   (mean of the category accuracies)")
    print(
        f"\n{time.perf_counter() - started:.1f}s. Guessing among 10 categories: 10% per row, 30% for shoes."
    )


if __name__ == "__main__":
    try:
        main()
    except (BenchError, ArtifactError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
