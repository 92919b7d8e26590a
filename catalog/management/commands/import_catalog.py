"""python manage.py import_catalog DIR --label-from-folder [--split train] [--limit N] [--unpublished]"""

import hashlib
import pathlib
import time
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import Category, Product
from catalog.services.categories import CategoryLabelError, category_for_prediction
from catalog.services.products import product_create

SPLITS = ("train", "validation", "test")
PROGRESS_EVERY = 100
# Derived from the photo's bytes, so importing the same photo again always yields the same SKU.
SKU_PREFIX = "IMP-"
SKU_HASH_LENGTH = 20
NAME_MAX_LENGTH = Product._meta.get_field("name").max_length


def _visible_children(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(child for child in folder.iterdir() if not child.name.startswith("."))


def _class_folders(root: pathlib.Path, splits: list[str]) -> list[pathlib.Path]:
    """The labelled folders to import: DIR/<class>, or DIR/<split>/<class> for the chosen splits."""
    present = [split for split in SPLITS if (root / split).is_dir()]
    if splits and not present:
        raise CommandError(f"{root} has no train/validation/test folders; --split needs that layout")
    missing = [split for split in splits if split not in present]
    if missing:
        raise CommandError(
            f"{root} has no {', '.join(missing)} folder; it has: {', '.join(present) or 'none'}"
        )
    split_roots = [root / split for split in (splits or present)] or [root]
    folders = [
        child for split_root in split_roots for child in _visible_children(split_root) if child.is_dir()
    ]
    if not folders:
        where = ", ".join(str(split_root) for split_root in split_roots)
        raise CommandError(f"no class folders in {where}: expected <class>/<photo> inside")
    return folders


def _photos(folder: pathlib.Path) -> list[pathlib.Path]:
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]


class Command(BaseCommand):
    help = (
        "Import a folder of labelled photos (DIR/<class>/*.jpg or DIR/<split>/<class>/*.jpg) as products "
        "filed under categories named after the folders; photos already in the catalog are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=pathlib.Path, help="folder of class folders (or of split folders)")
        parser.add_argument(
            "--label-from-folder",
            action="store_true",
            help="file each photo under the category named after its folder (required in this version)",
        )
        parser.add_argument(
            "--split",
            action="append",
            choices=SPLITS,
            default=[],
            help="import only this split of a train/validation/test layout (repeatable; default: all)",
        )
        parser.add_argument("--limit", type=int, default=None, help="create at most N products")
        parser.add_argument("--unpublished", action="store_true", help="import the products unpublished")

    def handle(self, *args: object, **options: object) -> None:
        root: pathlib.Path = options["dir"]
        if not options["label_from_folder"]:
            raise CommandError(
                "--label-from-folder is required in this version: the photos' folders name their categories"
            )
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError(f"--limit must be at least 1, not {options['limit']}")
        if not root.exists():
            raise CommandError(f"no such folder: {root}")
        if not root.is_dir():
            raise CommandError(f"{root} is a file, not a folder of class folders")
        folders = _class_folders(root, list(dict.fromkeys(options["split"])))
        photos = [(folder, path) for folder in folders for path in _photos(folder)]
        if not photos:
            raise CommandError(f"no photos in the {len(folders)} class folders of {root}")
        self.stdout.write(f"importing {len(photos)} photos from {len(folders)} class folders")
        self._import(photos, options=options)

    def _import(self, photos: list[tuple[pathlib.Path, pathlib.Path]], *, options: dict) -> None:
        started = time.monotonic()
        # One query up front: a photo whose bytes are already a product's photo is not imported again.
        known_hashes = set(Product.objects.values_list("image_sha256", flat=True))
        categories_before = Category.objects.count()
        categories: dict[str, Category | None] = {}
        total, limit = len(photos), options["limit"]
        created = already_present = skipped = seen = 0
        for folder, path in photos:
            if limit is not None and created >= limit:
                break
            seen += 1
            if folder.name not in categories:
                categories[folder.name] = self._category(folder)
            category = categories[folder.name]
            outcome = (
                "skipped"
                if category is None
                else self._import_photo(path, category=category, known_hashes=known_hashes, options=options)
            )
            created += outcome == "created"
            already_present += outcome == "present"
            skipped += outcome == "skipped"
            if seen % PROGRESS_EVERY == 0:
                self.stdout.write(f"{seen}/{total} photos ({seen / total:.0%}), {created} created")
        categories_created = Category.objects.count() - categories_before
        self.stdout.write(
            f"created {created}, already present {already_present}, skipped {skipped} (bad files), "
            f"categories created {categories_created}, in {time.monotonic() - started:.1f} s"
        )
        if seen < total:
            self.stdout.write(f"stopped at --limit {limit}; run again to import the rest")
        if created:
            self.stdout.write(
                f"{created} new products were sent to the classification queue: a prediction is only "
                "recorded as a suggestion, never over the folder's label"
            )

    def _category(self, folder: pathlib.Path) -> Category | None:
        try:
            # A folder named after a merged category files its photos where that category went.
            category = category_for_prediction(label=folder.name)
        except CategoryLabelError as error:
            self.stderr.write(f"warning: {folder}: skipped, {error}")
            return None
        if not category.is_active:
            self.stderr.write(
                f"warning: {folder}: category {category.name} is retired; "
                "its photos are imported but not trained on until it is reactivated"
            )
        return category

    def _import_photo(
        self, path: pathlib.Path, *, category: Category, known_hashes: set[str], options: dict
    ) -> str:
        try:
            content = path.read_bytes()
        except OSError as error:
            self.stderr.write(f"warning: {path}: skipped, cannot read it ({error.strerror or error})")
            return "skipped"
        image_sha256 = hashlib.sha256(content).hexdigest()
        if image_sha256 in known_hashes:
            return "present"
        try:
            product_create(
                name=f"{category.name} {path.stem}"[:NAME_MAX_LENGTH],
                sku=f"{SKU_PREFIX}{image_sha256[:SKU_HASH_LENGTH].upper()}",
                price=Decimal("0"),
                image=ContentFile(content, name=path.name),
                category=category,
                is_published=not options["unpublished"],
            )
        except ValidationError as error:
            self.stderr.write(f"warning: {path}: skipped, {' '.join(error.messages)}")
            return "skipped"
        known_hashes.add(image_sha256)
        return "created"
