"""Product photo files: what is stored and served, what is kept privately, and when files are removed.

A photo is served as its picture only: upright (the EXIF orientation applied), in sRGB, with no EXIF (GPS
included), XMP, ICC profile or comments, re-encoded in its own format family. The uploaded bytes are kept
under ORIGINALS_PREFIX only with VITRINE_KEEP_ORIGINAL_PHOTOS; that folder is never served (config/media.py,
docker/Caddyfile). A file whose row is deleted, or whose photo is replaced, is removed once that change
commits; a rolled-back change removes nothing.
"""

import io
from collections.abc import Iterable
from functools import partial
from pathlib import PurePath

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models.signals import post_delete
from PIL import Image, ImageCms, ImageOps

from catalog.colors import photo_colors
from catalog.models import Product, ProductImage, ReviewQueueItem
from catalog.photo_hash import photo_hashes
from catalog.validators import ACCEPTED_FORMATS

# Uploaded bytes, EXIF and all, when VITRINE_KEEP_ORIGINAL_PHOTOS is on: "originals/<the served name>".
ORIGINALS_PREFIX = "originals/"
# Lossy formats are re-encoded at this quality: no visible loss on a product photo, a fraction of the size.
JPEG_QUALITY = 90
WEBP_QUALITY = 90
SRGB_PROFILE = ImageCms.createProfile("sRGB")
# The one piece of image.info that is picture, not metadata: which palette entry or colour is see-through.
KEPT_INFO = ("transparency",)


def _in_srgb(image: Image.Image) -> Image.Image:
    """The picture's colours in sRGB, so dropping its ICC profile does not change how it looks."""
    profile = image.info.get("icc_profile")
    if profile and image.mode in ("RGB", "RGBA", "CMYK"):
        try:
            return ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                SRGB_PROFILE,
                outputMode="RGBA" if image.mode == "RGBA" else "RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            # A damaged profile says nothing reliable about the colours: the pixels are taken as they are.
            pass
    return image.convert("RGB") if image.mode == "CMYK" else image


def photo_without_metadata(data: bytes) -> bytes:
    """The photo in `data` (already checked by validate_product_image) re-encoded with its picture only.

    Upright, sRGB, the first frame of an animation, the same format (a multi-picture MPO becomes a JPEG).
    """
    with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as opened:
        image_format = "JPEG" if opened.format == "MPO" else opened.format
        picture = _in_srgb(ImageOps.exif_transpose(opened))
        if image_format == "JPEG" and picture.mode not in ("L", "RGB"):
            picture = picture.convert("RGB")
        # copy() starts without the EXIF Pillow caches; info is rebuilt from the kept keys only.
        clean = picture.copy()
        clean.info = {key: picture.info[key] for key in KEPT_INFO if key in picture.info}
    options = {"JPEG": {"quality": JPEG_QUALITY}, "WEBP": {"quality": WEBP_QUALITY}}.get(image_format, {})
    buffer = io.BytesIO()
    clean.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def photo_store(*, owner: models.Model, upload: File) -> str:
    """Writes the photo as served under a new random name (owner's `image` field decides it) and returns that
    name; with VITRINE_KEEP_ORIGINAL_PHOTOS the uploaded bytes too, under ORIGINALS_PREFIX."""
    upload.open("rb")
    upload.seek(0)
    data = upload.read()
    upload.seek(0)
    field = owner._meta.get_field("image")
    name = field.generate_filename(owner, PurePath(str(upload.name or "")).name)
    name = field.storage.save(name, ContentFile(photo_without_metadata(data)))
    if settings.VITRINE_KEEP_ORIGINAL_PHOTOS:
        field.storage.save(f"{ORIGINALS_PREFIX}{name}", ContentFile(data))
    return name


def photo_color_names(*, upload: File) -> list[str]:
    """The product's dominant colour names in the photo (catalog.colors), the largest share first."""
    upload.open("rb")
    upload.seek(0)
    with Image.open(upload, formats=ACCEPTED_FORMATS) as opened:
        names = photo_colors(opened)
    upload.seek(0)
    return names


def photo_upload_hashes(*, upload: File) -> tuple[int, int]:
    """The upright photo's perceptual hash and its mirror image's (catalog.photo_hash)."""
    upload.open("rb")
    upload.seek(0)
    with Image.open(upload, formats=ACCEPTED_FORMATS) as opened:
        hashes = photo_hashes(ImageOps.exif_transpose(opened))
    upload.seek(0)
    return hashes


def photo_move_to_new_name(*, owner: models.Model) -> str:
    """Stores the owner's photo (and its kept original) again under a new random name and returns that name;
    the old files go once the change commits, so a URL handed out before stops working."""
    field = owner._meta.get_field("image")
    old_name = owner.image.name
    with field.storage.open(old_name, "rb") as stored:
        new_name = field.storage.save(field.generate_filename(owner, PurePath(old_name).name), stored)
    if field.storage.exists(f"{ORIGINALS_PREFIX}{old_name}"):
        with field.storage.open(f"{ORIGINALS_PREFIX}{old_name}", "rb") as original:
            field.storage.save(f"{ORIGINALS_PREFIX}{new_name}", original)
    photo_files_delete_on_commit(names=[old_name])
    return new_name


def photo_files_delete(*, names: Iterable[str]) -> None:
    """Removes these stored photos and their kept originals; a file already gone is no error."""
    for name in names:
        if name:
            default_storage.delete(name)
            default_storage.delete(f"{ORIGINALS_PREFIX}{name}")


def photo_files_delete_on_commit(*, names: Iterable[str]) -> None:
    # robust: a file that cannot be removed is logged; it never turns a committed change into an error.
    transaction.on_commit(partial(photo_files_delete, names=list(names)), robust=True)


def _photo_row_deleted(sender: type[models.Model], instance: Product | ProductImage, **kwargs) -> None:
    photo_files_delete_on_commit(names=[instance.image.name])


def connect_photo_file_removal() -> None:
    """Rows deleted any way (admin, cascade from their product, a queryset) take their files with them."""
    for model in (Product, ReviewQueueItem, ProductImage):
        post_delete.connect(_photo_row_deleted, sender=model, dispatch_uid=f"photo-files-{model.__name__}")
