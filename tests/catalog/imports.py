"""Real import files made on the fly: a CSV of products and a ZIP of small generated photos."""

import csv
import io
import zipfile

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

HEADER = ["sku", "name", "price", "description", "category", "image"]


def small_png(seed: int) -> bytes:
    """A 16x16 PNG whose colour (and so bytes) differ for each seed."""
    image = Image.new("RGB", (16, 16), (seed % 256, seed // 256 % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def csv_upload(
    rows: list[list[str]], *, header: list[str] = HEADER, prefix: bytes = b""
) -> SimpleUploadedFile:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return SimpleUploadedFile("products.csv", prefix + text.getvalue().encode(), content_type="text/csv")


def zip_upload(photos: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in photos.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("photos.zip", buffer.getvalue(), content_type="application/zip")


def catalog_files(count: int, *, sku_prefix: str = "BULK") -> tuple[list[list[str]], dict[str, bytes]]:
    """`count` good rows (sku, name, price, description, category, image) and their photos."""
    rows, photos = [], {}
    for index in range(count):
        photos[f"photos/p{index:04d}.png"] = small_png(index)
        rows.append(
            [
                f"{sku_prefix}-{index:04d}",
                f"Product {index}",
                f"{index % 90 + 1}.50",
                "",
                "",
                f"p{index:04d}.png",
            ]
        )
    return rows, photos
