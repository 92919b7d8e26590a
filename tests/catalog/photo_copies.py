"""Photo-like synthetic pictures and the altered copies a shop sees again: re-encoded, resized, cropped,
mirrored."""

import io

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageOps


def product_photo(*, seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A photo-like picture: smooth random shapes (a blurred coarse noise), different for each seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, *, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def altered_copy(image: Image.Image) -> Image.Image:
    """Resized to 60 %, 3 % cropped off each side, mirrored, re-encoded at quality 60."""
    small = image.resize((image.width * 6 // 10, image.height * 6 // 10), Image.Resampling.LANCZOS)
    dx, dy = small.width * 3 // 100, small.height * 3 // 100
    cropped = ImageOps.mirror(small.crop((dx, dy, small.width - dx, small.height - dy)))
    return Image.open(io.BytesIO(jpeg(cropped, quality=60)))


def upload(image: Image.Image, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg(image), content_type="image/jpeg")
