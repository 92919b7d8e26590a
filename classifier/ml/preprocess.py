"""Turn any photo a shop uploads into the uint8 array a model eats: one function for training and serving.

`open_image` reads and checks a file (format, corruption, decompression bombs, EXIF orientation, odd modes)
and returns an RGB image; `to_array` / `prepare_batch` shape it for a model in one of two styles:

- "photo": keep the aspect ratio, pad with white, resize (models trained on photo folders, CIFAR).
- "fashion-mnist": bridge a product photo (dark garment on a light background) to the Fashion-MNIST look
  (light garment on black, centred, filling the 28x28 frame). Fashion-MNIST's own arrays already have that
  look and pass through it unchanged in appearance.
"""

import io
import os
import threading
import warnings
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS: int = 40_000_000
STYLES = ("photo", "fashion-mnist")

WHITE = (255, 255, 255)
# Share of the image's edge treated as "border" when guessing the background of a product photo.
BORDER_FRACTION = 0.05
# RGB distance from the background colour above which a pixel counts as part of the product.
MIN_OBJECT_DISTANCE = 40.0
# Longest side a photo is reduced to before looking for the product in it.
ANALYSIS_SIDE = 256
# Rows/columns with fewer product pixels than this share are noise, not product, when cropping.
MIN_OBJECT_LINE_SHARE = 0.02

# warnings.catch_warnings swaps process-wide filters, so header parsing from loader threads takes turns.
_HEADER_LOCK = threading.Lock()


class ImageError(ValueError):
    """A file that cannot be used as a product photo; the message is one readable line."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _read_source(source: str | os.PathLike | bytes | BinaryIO, *, name: str) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read ({_one_line(exc.strerror or exc)})") from None
    if source.seekable():
        # An upload that was already read once (by a validator) still holds the whole photo.
        source.seek(0)
    return source.read()


def _open_checked_header(data: bytes, *, name: str) -> Image.Image:
    """Opens lazily (header only) and refuses images too large to decode safely."""
    with _HEADER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (cannot identify image file)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(
                f"{name}: image too large (over {MAX_IMAGE_PIXELS:,} pixels, possible decompression bomb)"
            ) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: image too large ({width}x{height} is over {MAX_IMAGE_PIXELS:,} pixels, "
            "possible decompression bomb)"
        )
    return image


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale scaled into 0..255 instead of clipped at 255."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0)
    if image.mode.startswith("I;16"):
        scaled = values * (255.0 / 65535.0)
    else:
        low, high = float(values.min()), float(values.max())
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
            scaled = values * (255.0 / 65535.0)
        else:
            scaled = (values - low) * (255.0 / ((high - low) or 1.0))
    return Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), mode="L")


def _flatten_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_bit_depth_to_8bit(image).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _flatten_on_white(image)
    return image.convert("RGB")


def open_image(source: str | os.PathLike | bytes | BinaryIO, *, name: str | None = None) -> Image.Image:
    """Reads a product photo from a path, bytes or file object and returns it as an RGB image.

    Verifies the content (Pillow verify + a full decode), refuses empty, truncated and non-image files and
    images over MAX_IMAGE_PIXELS (checked from the header, before decoding), keeps the first frame of
    animations, applies the EXIF orientation, and converts every mode to RGB: alpha and palette
    transparency are flattened on white, 16-bit / 32-bit / float grayscale are scaled (not clipped) to 8 bits.
    Raises ImageError with a one-line message naming the file.
    """
    if name is None:
        if isinstance(source, str | os.PathLike):
            name = os.fspath(source)
        else:
            name = str(getattr(source, "name", "image"))
    data = _read_source(source, name=name)
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        _open_checked_header(data, name=name).verify()
        image = _open_checked_header(data, name=name)
        image.load()
        image = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error...)
        raise ImageError(f"{name}: corrupt or truncated image ({_one_line(exc)})") from None
    return _to_rgb(image)


def _check_shape(input_shape: tuple[int, int, int], style: str) -> tuple[int, int, int]:
    if style not in STYLES:
        raise ValueError(f"unknown preprocessing style {style!r}; choose one of {', '.join(STYLES)}")
    height, width, channels = (int(size) for size in input_shape)
    if channels not in (1, 3) or height < 1 or width < 1:
        raise ValueError(f"input shape must be (height, width, 1 or 3), got {tuple(input_shape)}")
    return height, width, channels


def _photo_array(image: Image.Image, *, height: int, width: int, channels: int) -> np.ndarray:
    padded = ImageOps.pad(image.convert("RGB"), (width, height), Image.Resampling.BILINEAR, color=WHITE)
    if channels == 1:
        return np.asarray(padded.convert("L"))[:, :, np.newaxis]
    return np.asarray(padded)


def _border_pixels(values: np.ndarray) -> np.ndarray:
    rows, cols = values.shape[:2]
    depth_rows = max(1, round(rows * BORDER_FRACTION))
    depth_cols = max(1, round(cols * BORDER_FRACTION))
    return np.concatenate(
        [
            values[:depth_rows].reshape(-1, *values.shape[2:]),
            values[-depth_rows:].reshape(-1, *values.shape[2:]),
            values[:, :depth_cols].reshape(-1, *values.shape[2:]),
            values[:, -depth_cols:].reshape(-1, *values.shape[2:]),
        ]
    )


def _object_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the product, ignoring rows/columns with only a few stray pixels."""
    rows = np.flatnonzero(mask.sum(axis=1) >= max(1, MIN_OBJECT_LINE_SHARE * mask.shape[1]))
    cols = np.flatnonzero(mask.sum(axis=0) >= max(1, MIN_OBJECT_LINE_SHARE * mask.shape[0]))
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fashion_mnist_array(image: Image.Image, *, height: int, width: int, channels: int) -> np.ndarray:
    """Background guessed from the border; what differs from it is the product, made light on black
    (inverted when the background is light), cropped, fitted into the frame keeping aspect, stretched.
    """
    if max(image.size) > ANALYSIS_SIDE:
        # Finding the product needs no more detail than this, and a phone photo would cost 100x the time.
        image = image.copy()
        image.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    gray = np.asarray(image.convert("L")).astype(np.float32)
    background_colour = np.median(_border_pixels(rgb), axis=0)
    distance = np.linalg.norm(rgb - background_colour, axis=2)
    # A background that varies (wood grain, fabric) must not count as product, so its own spread raises the
    # bar; median and MAD ignore the parts of the product that touch the border.
    border_distance = _border_pixels(distance)
    typical = float(np.median(border_distance))
    spread = float(np.median(np.abs(border_distance - typical)))
    threshold = max(MIN_OBJECT_DISTANCE, typical + 4.0 * spread)
    product_mask = distance > threshold
    if float(np.median(_border_pixels(gray))) >= 128:
        gray = 255.0 - gray
    background_level = float(np.median(_border_pixels(gray)))
    garment = np.clip(gray - background_level, 0, 255) * product_mask
    bounds = _object_bounds(product_mask)
    if bounds is not None:
        top, bottom, left, right = bounds
        garment = garment[top:bottom, left:right]
    item = Image.fromarray(garment.astype(np.uint8), mode="L")
    scale = min(width / item.width, height / item.height)
    # A thin item (a belt seen edge-on) must keep at least one row or column.
    fitted_size = (
        max(1, min(width, round(item.width * scale))),
        max(1, min(height, round(item.height * scale))),
    )
    item = item.resize(fitted_size, Image.Resampling.LANCZOS)
    frame = Image.new("L", (width, height), 0)
    frame.paste(item, ((width - item.width) // 2, (height - item.height) // 2))
    values = np.asarray(ImageOps.autocontrast(frame))
    if channels == 3:
        return np.repeat(values[:, :, np.newaxis], 3, axis=2)
    return values[:, :, np.newaxis]


def to_array(image: Image.Image, *, input_shape: tuple[int, int, int], style: str) -> np.ndarray:
    """One image as a uint8 (H, W, C) array in the given style (see the module docstring)."""
    height, width, channels = _check_shape(input_shape, style)
    if style == "photo":
        return _photo_array(image, height=height, width=width, channels=channels)
    return _fashion_mnist_array(image, height=height, width=width, channels=channels)


def prepare_batch(
    images: Sequence[Image.Image], *, input_shape: tuple[int, int, int], style: str
) -> np.ndarray:
    """Images as one uint8 (N, H, W, C) batch, each through `to_array`."""
    height, width, channels = _check_shape(input_shape, style)
    if not images:
        return np.zeros((0, height, width, channels), dtype=np.uint8)
    return np.stack([to_array(image, input_shape=(height, width, channels), style=style) for image in images])
