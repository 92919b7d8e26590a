"""Product photos are checked by what the bytes are, never by the name the client gave them."""

import hashlib
import io
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from PIL import Image, UnidentifiedImageError

from classifier.ml.preprocess import MAX_IMAGE_PIXELS, ImageError, open_image

# Pillow format name -> file extensions a file of that format may carry. MPO is how Pillow names
# the multi-picture JPEGs many phone cameras write.
ACCEPTED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "MPO": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
}
# Only these Pillow parsers ever read an upload; Pillow opens MPO files through its JPEG parser.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
ACCEPTED_FORMATS_TEXT = "JPEG, PNG, WebP or GIF"
ACCEPT_ATTRIBUTE = "image/jpeg,image/png,image/webp,image/gif"
# Client file names can be anything; only this much of one goes into an error message.
MAX_NAME_IN_MESSAGE = 80

# Signatures of the accepted formats: bytes that start like one but that Pillow cannot read are damaged.
ACCEPTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# Image formats Pillow may know but we refuse, recognised by signature only: no parser of theirs runs.
REFUSED_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
# A BMP starts with "BM" and a DIB header of one of these sizes (the size check keeps "BMW…" text out).
BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)
# ISO media brands (bytes 8..12 after "ftyp") of still-image formats phones save.
ISO_MEDIA_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
}
# Common things people upload by mistake, named so the error says what the file really is.
KNOWN_NON_IMAGES: tuple[tuple[bytes, Promise], ...] = (
    (b"%PDF", _("a PDF document")),
    (b"PK\x03\x04", _("a ZIP archive")),
    (b"PK\x05\x06", _("a ZIP archive (empty)")),
    (b"\x1f\x8b", _("a gzip archive")),
    (b"Rar!", _("a RAR archive")),
    (b"7z\xbc\xaf\x27\x1c", _("a 7-Zip archive")),
    (b"\x7fELF", _("a program (ELF)")),
)


class ProductImageError(ValidationError):
    """A file refused as a product photo; the message is one line that names the file and the problem."""


def _shortened(name: str) -> str:
    if len(name) > MAX_NAME_IN_MESSAGE:
        return name[: MAX_NAME_IN_MESSAGE - 1] + "…"
    return name


def _human_size(size: int) -> str:
    if size < 1024:
        return gettext("%(size)d bytes") % {"size": size}
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _too_large(*, name: str, size: str, limit: int) -> ProductImageError:
    return ProductImageError(
        gettext("%(name)s: the file is %(size)s; the limit is %(limit)s. Upload a smaller photo.")
        % {"name": name, "size": size, "limit": _human_size(limit)},
        code="too_large",
    )


def _read_at_most(upload: File, *, limit: int) -> bytes:
    upload.open("rb")
    upload.seek(0)
    data = upload.read(limit + 1)
    # Whoever stores the file next must read it from the start.
    upload.seek(0)
    return data


def _describe_unreadable(data: bytes) -> tuple[str, str]:
    """(what the file most likely is, error code) for a file no accepted parser can read."""
    for signature, image_format in ACCEPTED_SIGNATURES:
        if data.startswith(signature):
            return _damaged(image_format), "corrupt"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _damaged("WebP"), "corrupt"
    refused_format = next(
        (fmt for signature, fmt in REFUSED_IMAGE_SIGNATURES if data.startswith(signature)), None
    )
    if data.startswith(b"BM") and int.from_bytes(data[14:18], "little") in BMP_HEADER_SIZES:
        refused_format = "BMP"
    if data[4:8] == b"ftyp" and data[8:12] in ISO_MEDIA_BRANDS:
        refused_format = ISO_MEDIA_BRANDS[data[8:12]]
    if refused_format is not None:
        message = gettext("%(format)s images are not accepted") % {"format": refused_format}
        return message, "format_not_accepted"
    return _describe_non_image(data), "not_an_image"


def _damaged(image_format: str) -> str:
    return gettext("a damaged %(format)s file (its header cannot be read)") % {"format": image_format}


def _describe_non_image(data: bytes) -> str:
    for signature, kind in KNOWN_NON_IMAGES:
        if data.startswith(signature):
            return gettext("%(kind)s, not an image") % {"kind": kind}
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return gettext("an SVG drawing, not a photo")
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return gettext("an HTML page, not an image")
    if head.startswith(b"<?xml"):
        return gettext("an XML document, not an image")
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return gettext("not an image (unrecognised content)")
    return gettext("a text file, not an image")


def _identify_format(data: bytes, *, name: str) -> str:
    """Reads only the header, and only with the accepted formats' parsers."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            return image.format
    except UnidentifiedImageError:
        description, code = _describe_unreadable(data)
        raise ProductImageError(
            gettext("%(name)s: %(problem)s. Upload a %(formats)s image.")
            % {"name": name, "problem": description, "formats": ACCEPTED_FORMATS_TEXT},
            code=code,
        ) from None
    except Image.DecompressionBombError:
        raise ProductImageError(
            gettext("%(name)s: image too large (over %(pixels)s pixels, possible decompression bomb).")
            % {"name": name, "pixels": f"{MAX_IMAGE_PIXELS:,}"},
            code="too_many_pixels",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ProductImageError(
            gettext("%(name)s: corrupt or truncated image (%(error)s).")
            % {"name": name, "error": " ".join(str(exc).split())},
            code="corrupt",
        ) from None


def validate_product_image(upload: File) -> str:
    """Refuses anything but a whole, sane JPEG, PNG, WebP or GIF whose name matches its content.

    Returns the sha256 hex digest of the bytes; leaves the file positioned at its start.
    Raises ProductImageError (a ValidationError) with a one-line message naming the file.
    """
    file_name = PurePath(str(upload.name or "")).name or "upload"
    name = _shortened(file_name)
    limit = settings.VITRINE_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise _too_large(name=name, size=_human_size(upload.size), limit=limit)
    data = _read_at_most(upload, limit=limit)
    if not data:
        raise ProductImageError(
            gettext("%(name)s: the file is empty (0 bytes).") % {"name": name}, code="empty"
        )
    if len(data) > limit:
        raise _too_large(name=name, size=gettext("over %(size)s") % {"size": _human_size(limit)}, limit=limit)

    extension = PurePath(file_name).suffix.lower()
    if not extension:
        raise ProductImageError(
            gettext(
                "%(name)s: the file name has no extension; "
                "name it .jpg, .png, .webp or .gif to match its content."
            )
            % {"name": name},
            code="no_extension",
        )
    image_format = _identify_format(data, name=name)
    expected = ACCEPTED_EXTENSIONS[image_format]
    if extension not in expected:
        shown_format = "JPEG" if image_format == "MPO" else image_format
        raise ProductImageError(
            gettext(
                "%(name)s: the content is a %(format)s image but the name ends in %(extension)s; "
                "rename it to %(expected)s."
            )
            % {"name": name, "format": shown_format, "extension": extension, "expected": expected[0]},
            code="wrong_extension",
        )
    try:
        open_image(data, name=name)
    except ImageError as exc:
        raise ProductImageError(f"{str(exc).rstrip('.')}.", code="invalid_image") from None
    return hashlib.sha256(data).hexdigest()
