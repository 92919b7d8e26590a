"""Files a product photo upload must refuse, each with the words its error message must contain.

Built in memory, small and fast: the decompression bombs only declare a huge size in their header.
"""

import io
import random
import struct
import zipfile
import zlib
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class BadFile:
    case: str
    name: str
    content: bytes
    message: str


def image_bytes(image_format: str, *, size: tuple[int, int] = (48, 48), seed: int = 1) -> bytes:
    """Random pixels, so the compressed data is long enough to cut in half meaningfully."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(*, width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height pixels but carries almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def gif_declaring(*, width: int, height: int) -> bytes:
    gif = image_bytes("GIF", size=(8, 8))
    return gif[:6] + struct.pack("<HH", width, height) + gif[10:]


def png_with_corrupt_pixel_data() -> bytes:
    """Header and checksums intact, compressed pixel data scrambled."""
    png = image_bytes("PNG")
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    pixel_data = bytearray(png[start + 8 : start + 8 + length])
    pixel_data[10:60] = b"\xff" * 50
    return png[:start] + _png_chunk(b"IDAT", bytes(pixel_data)) + png[start + 12 + length :]


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", image_bytes("JPEG"))
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'
HTML = b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)></body></html>\n"

BAD_FILES = [
    BadFile("empty", "empty.jpg", b"", "the file is empty"),
    BadFile("truncated JPEG", "shirt.jpg", _half(image_bytes("JPEG")), "truncated"),
    BadFile("truncated PNG", "shirt.png", _half(image_bytes("PNG")), "truncated"),
    BadFile("truncated WebP", "shirt.webp", _half(image_bytes("WEBP")), "corrupt or truncated"),
    BadFile("truncated GIF", "shirt.gif", _half(image_bytes("GIF")), "truncated"),
    BadFile("PNG with corrupt pixel data", "shirt.png", png_with_corrupt_pixel_data(), "corrupt"),
    BadFile("JPEG header only", "shirt.jpg", image_bytes("JPEG")[:20], "damaged JPEG file"),
    BadFile("PNG declaring 1x0 pixels", "shirt.png", png_declaring(width=1, height=0), "damaged PNG file"),
    BadFile(
        "PNG bomb over Pillow's own limit",
        "bomb.png",
        png_declaring(width=20_000, height=20_000),
        "possible decompression bomb",
    ),
    BadFile(
        "PNG bomb over our limit",
        "bomb.png",
        png_declaring(width=8_000, height=8_000),
        "possible decompression bomb",
    ),
    BadFile(
        "GIF bomb", "bomb.gif", gif_declaring(width=65_535, height=65_535), "possible decompression bomb"
    ),
    BadFile("plain text named .jpg", "notes.jpg", b"Blue shirt, size M, 100% cotton\n", "a text file"),
    BadFile("PDF named .png", "scan.png", b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n", "a PDF document"),
    BadFile("HTML named .jpg", "page.jpg", HTML, "an HTML page"),
    BadFile("SVG", "logo.svg", SVG, "an SVG drawing"),
    BadFile("SVG named .png", "logo.png", SVG, "an SVG drawing"),
    BadFile("ZIP named .jpg", "photos.jpg", zip_archive(), "a ZIP archive"),
    BadFile("random bytes", "noise.png", random.Random(7).randbytes(4096), "not an image"),
    BadFile("PNG named .jpg", "shirt.jpg", image_bytes("PNG"), "a PNG image but the name ends in .jpg"),
    BadFile("JPEG named .gif", "shirt.gif", image_bytes("JPEG"), "a JPEG image but the name ends in .gif"),
    BadFile("JPEG named .jpg.php", "shirt.jpg.php", image_bytes("JPEG"), "the name ends in .php"),
    BadFile("no extension", "shirt", image_bytes("JPEG"), "has no extension"),
    BadFile("BMP", "shirt.bmp", image_bytes("BMP"), "BMP images are not accepted"),
    BadFile("TIFF", "shirt.tiff", image_bytes("TIFF"), "TIFF images are not accepted"),
    BadFile("ICO", "favicon.ico", image_bytes("ICO"), "ICO images are not accepted"),
]
