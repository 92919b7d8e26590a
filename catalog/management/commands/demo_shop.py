"""python manage.py demo_shop [--per-category N] [--from DIR]: sample products for a fresh install."""

import hashlib
import pathlib
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import Product
from catalog.services.products import product_create

SAMPLE_FOLDER = pathlib.Path("clothing-small") / "validation"
SKU_PREFIX = "DEMO-"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _sample_photos(root: pathlib.Path, *, per_category: int) -> list[pathlib.Path]:
    """The first `per_category` photos (by name) of each class folder under `root`."""
    folders = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    return [
        photo
        for folder in folders
        for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:per_category]
    ]


class Command(BaseCommand):
    help = (
        "Add sample products (photos from the CC0 clothing-small data set, no category) so the dashboard, "
        "the review queue and the API show something on a fresh install; the classifier files them. "
        "Running it again adds nothing twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--per-category", type=int, default=4, help="photos per category folder")
        parser.add_argument(
            "--from",
            dest="source",
            type=pathlib.Path,
            default=None,
            help=f"a folder of class folders (default: VITRINE_DATASETS_DIR/{SAMPLE_FOLDER})",
        )

    def handle(self, *args: object, **options: object) -> None:
        per_category = options["per_category"]
        if not 1 <= per_category <= 100:
            raise CommandError(f"--per-category must be between 1 and 100, not {per_category}")
        root = options["source"] or pathlib.Path(settings.VITRINE_DATASETS_DIR) / SAMPLE_FOLDER
        if not root.is_dir():
            raise CommandError(
                f"no sample photos at {root}: set VITRINE_DATASETS_DIR to the folder holding clothing-small, "
                "or give --from DIR (a folder of class folders)"
            )
        photos = _sample_photos(root, per_category=per_category)
        if not photos:
            raise CommandError(f"no photos in the class folders of {root}")
        known = set(Product.objects.filter(sku__startswith=SKU_PREFIX).values_list("sku", flat=True))
        created = skipped = 0
        for number, path in enumerate(photos, start=1):
            content = path.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            sku = f"{SKU_PREFIX}{digest[:16].upper()}"
            if sku in known:
                continue
            try:
                product_create(
                    name=f"Sample product {number}",
                    sku=sku,
                    # A made-up price from the photo's hash, the same on every install.
                    price=Decimal(10 + int(digest[:4], 16) % 90) + Decimal("0.90"),
                    image=ContentFile(content, name=path.name),
                    description=f"Demo product; photo {path.name} from the CC0 clothing-small data set.",
                )
            except ValidationError as error:
                self.stderr.write(f"warning: {path}: skipped, {' '.join(error.messages)}")
                skipped += 1
                continue
            created += 1
        self.stdout.write(
            f"{created} sample products added ({len(photos) - created - skipped} were already there, "
            f"{skipped} skipped); the classifier files them, the unsure ones wait in the review queue."
        )
