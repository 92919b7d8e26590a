"""What bench/duplicates.py and bench/similar.py share: the validation photos, the altered copy a shop sees
again, and the starter model's embeddings of photos (the same serving code the inference worker runs)."""

import io
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

from classifier.ml.preprocess import open_image
from classifier.ml.serving import Classifier
from classifier.ml.starter.assemble import assemble_starter_artifact

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# The copy: resized to 70 %, 2.5 % cropped off each side, mirrored, re-encoded as JPEG at quality 70.
COPY_SCALE = 0.7
COPY_CROP = 0.025
COPY_QUALITY = 70


def validation_photos(datasets: pathlib.Path) -> tuple[list[pathlib.Path], list[str]]:
    """clothing-small/validation: the photo files, sorted, and each one's category (its folder)."""
    folder = datasets / "clothing-small" / "validation"
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise SystemExit(f"no photos under {folder}; set VITRINE_DATASETS_DIR")
    return paths, [path.parent.name for path in paths]


def altered_copy(image: Image.Image) -> Image.Image:
    """The photo re-encoded, resized, slightly cropped and mirrored, all at once."""
    small = image.resize(
        (int(image.width * COPY_SCALE), int(image.height * COPY_SCALE)), Image.Resampling.LANCZOS
    )
    dx, dy = int(small.width * COPY_CROP), int(small.height * COPY_CROP)
    mirrored = ImageOps.mirror(small.crop((dx, dy, small.width - dx, small.height - dy)))
    buffer = io.BytesIO()
    mirrored.convert("RGB").save(buffer, format="JPEG", quality=COPY_QUALITY)
    return open_image(buffer.getvalue())


def starter_classifier() -> Classifier:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.monotonic()
        classifier = Classifier.load(assemble_starter_artifact(out_dir=pathlib.Path(scratch) / "starter"))
    print(f"starter model assembled and loaded in {time.monotonic() - started:.1f} s")
    return classifier


def embeddings(classifier: Classifier, images: list[Image.Image]) -> np.ndarray:
    """(N, D) float16 rows, L2-normalised: what the worker keeps on each Prediction row."""
    started = time.monotonic()
    rows = np.stack([prediction.embedding for prediction in classifier.predict_images(images)])
    print(f"embedded {len(images)} photos in {time.monotonic() - started:.1f} s ({rows.shape[1]} dimensions)")
    return rows
