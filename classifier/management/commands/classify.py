"""python manage.py classify IMG... --model DIR [--threshold 0.95] [--top 3] [--annotate OUTDIR]"""

import pathlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image, ImageDraw, ImageFont

from classifier.ml.artifact import ArtifactError
from classifier.ml.preprocess import ImageError, open_image
from classifier.ml.serving import SERVING_CHUNK, Classifier, Prediction, configure_tensorflow
from classifier.validators import threshold_problem

# Annotated copies of tiny images (Fashion-MNIST's 28 px) are enlarged so the caption stays readable.
ANNOTATED_MIN_WIDTH = 320


def describe(prediction: Prediction, *, threshold: float) -> str:
    """ "dress 97.1%, shirt 1.2%, coat 0.5%", or "not detected (shirt 60.2%, …)" under the threshold."""
    top = ", ".join(f"{label} {confidence:.1%}" for label, confidence in prediction.top)
    return top if prediction.confidence >= threshold else f"not detected ({top})"


def annotate(image: Image.Image, *, caption: str) -> Image.Image:
    if image.width < ANNOTATED_MIN_WIDTH:
        scale = ANNOTATED_MIN_WIDTH / image.width
        image = image.resize(
            (ANNOTATED_MIN_WIDTH, max(1, round(image.height * scale))), Image.Resampling.NEAREST
        )
    else:
        image = image.copy()
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, image.width // 28))
    margin = max(3, font.size // 3)
    _, _, _, text_bottom = draw.textbbox((margin, margin), caption, font=font)
    draw.rectangle((0, 0, image.width, text_bottom + margin), fill=(0, 0, 0))
    draw.text((margin, margin), caption, fill=(255, 255, 255), font=font)
    return image


class Command(BaseCommand):
    help = "Classify product photos with a trained model: top categories with confidence, or 'not detected'."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("images", nargs="+", type=pathlib.Path, metavar="IMG")
        parser.add_argument("--model", required=True, type=pathlib.Path, help="artifact directory")
        parser.add_argument(
            "--threshold",
            type=float,
            default=settings.VITRINE_CONFIDENCE_THRESHOLD,
            help="below this top confidence the image is 'not detected' (default %(default)s)",
        )
        parser.add_argument("--top", type=int, default=3, help="how many categories to print per image")
        parser.add_argument(
            "--annotate", type=pathlib.Path, metavar="OUTDIR", help="write captioned copies here"
        )

    def handle(self, *args: object, **options: object) -> None:
        images: list[pathlib.Path] = options["images"]
        threshold: float = options["threshold"]
        annotate_dir: pathlib.Path | None = options["annotate"]
        problem = threshold_problem(threshold)
        if problem is not None:
            raise CommandError(f"--threshold {problem}")
        if options["top"] < 1:
            raise CommandError(f"--top must be at least 1, not {options['top']}")
        device = configure_tensorflow()
        if options["verbosity"] >= 2:
            self.stderr.write(device)
        try:
            classifier = Classifier.load(options["model"])
        except ArtifactError as error:
            raise CommandError(str(error)) from None
        if annotate_dir is not None:
            try:
                annotate_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CommandError(f"{annotate_dir}: cannot create folder ({error.strerror})") from None

        written: set[pathlib.Path] = set()
        failed = 0
        for start in range(0, len(images), SERVING_CHUNK):
            opened: list[tuple[pathlib.Path, Image.Image]] = []
            for path in images[start : start + SERVING_CHUNK]:
                try:
                    opened.append((path, open_image(path)))
                except ImageError as error:
                    self.stderr.write(f"error: {error}")
                    failed += 1
            predictions = classifier.predict_images([image for _, image in opened], top_k=options["top"])
            for (path, image), prediction in zip(opened, predictions, strict=True):
                caption = describe(prediction, threshold=threshold)
                self.stdout.write(f"{path}: {caption}")
                if annotate_dir is not None:
                    target = annotate_dir / f"{path.stem}.annotated.jpg"
                    copy = 2
                    while target in written:
                        target = annotate_dir / f"{path.stem}-{copy}.annotated.jpg"
                        copy += 1
                    annotate(image, caption=caption).save(target, quality=90)
                    written.add(target)
        if failed:
            raise CommandError(f"{failed} of {len(images)} files could not be classified")
