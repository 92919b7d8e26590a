"""Shared data for the classifier tests: photo folders drawn at test time, bad files, a tiny Fashion-MNIST."""

import io
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
from django.conf import settings
from PIL import Image, ImageDraw

from classifier.ml.datasets import Dataset, load_dataset

# TensorFlow reads its log level when first imported, which happens later, inside the tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPE_CLASSES = ("circle", "square", "triangle")
SHAPE_COLOURS = {"circle": (200, 30, 30), "square": (30, 160, 40), "triangle": (40, 60, 200)}
PHOTOS_PER_CLASS = 12


def draw_shape_photo(*, shape: str, rng: np.random.Generator) -> Image.Image:
    """A product-photo stand-in: one coloured shape on a light background, random size and place."""
    width, height = int(rng.integers(48, 80)), int(rng.integers(48, 80))
    background = tuple(int(value) for value in rng.integers(225, 256, size=3))
    photo = Image.new("RGB", (width, height), background)
    side = int(rng.integers(min(width, height) // 2, min(width, height) - 4))
    left = int(rng.integers(2, width - side - 1))
    top = int(rng.integers(2, height - side - 1))
    colour = tuple(int(np.clip(value + rng.integers(-25, 26), 0, 255)) for value in SHAPE_COLOURS[shape])
    draw = ImageDraw.Draw(photo)
    if shape == "circle":
        draw.ellipse((left, top, left + side, top + side), fill=colour)
    elif shape == "square":
        draw.rectangle((left, top, left + side, top + side), fill=colour)
    else:
        draw.polygon([(left + side // 2, top), (left, top + side), (left + side, top + side)], fill=colour)
    return photo


def write_shape_photos(folder: pathlib.Path, *, shape: str, count: int, seed: int) -> list[pathlib.Path]:
    """`count` photos of one shape in `folder`, alternating JPEG and PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for number in range(count):
        path = folder / f"{shape}-{seed}-{number:02d}.{'jpg' if number % 2 == 0 else 'png'}"
        draw_shape_photo(shape=shape, rng=rng).save(path)
        paths.append(path)
    return paths


def png_header_only(*, width: int, height: int) -> bytes:
    """A PNG declaring `width` x `height` pixels but holding almost no data: a decompression-bomb stand-in."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encoded_photo(*, format: str, size: tuple[int, int] = (40, 30)) -> bytes:
    photo = Image.new("RGB", size, (180, 40, 40))
    buffer = io.BytesIO()
    photo.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def bad_image_files(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """Files a shop might upload that are not usable photos, by what is wrong with them."""
    folder = tmp_path / "bad"
    folder.mkdir()
    jpeg, png = encoded_photo(format="JPEG"), encoded_photo(format="PNG")
    contents = {
        "empty.jpg": b"",
        "notes.jpg": b"size chart: S M L XL\n" * 20,
        "catalogue.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) - 20],
        "bomb.png": png_header_only(width=20_000, height=20_000),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = folder / name
        paths[name].write_bytes(content)
    return paths


@pytest.fixture
def image_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """DIR/<shape>/* : 3 classes (circle, square, triangle) of 12 photos each, mixed JPEG and PNG."""
    root = tmp_path / "shapes"
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(root / shape, shape=shape, count=PHOTOS_PER_CLASS, seed=index)
    return root


@pytest.fixture
def split_image_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """DIR/{train,validation,test}/<shape>/* : 10 / 3 / 3 photos per class, 3 classes."""
    root = tmp_path / "shapes-split"
    for split_index, (split, count) in enumerate((("train", 10), ("validation", 3), ("test", 3))):
        for shape_index, shape in enumerate(SHAPE_CLASSES):
            write_shape_photos(
                root / split / shape, shape=shape, count=count, seed=100 * split_index + shape_index
            )
    return root


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> pathlib.Path:
    folder = pathlib.Path(settings.VITRINE_DATASETS_DIR) / "fashion-mnist"
    if not folder.is_dir():
        pytest.skip(f"Fashion-MNIST IDX files not found in {folder} (set VITRINE_DATASETS_DIR)")
    return folder


@pytest.fixture(scope="session")
def tiny_fashion(fashion_mnist_dir: pathlib.Path) -> Dataset:
    """Real Fashion-MNIST, 300 samples per split (stratified, seed 0)."""
    return load_dataset("fashion-mnist", datasets_dir=fashion_mnist_dir.parent).subset(per_split=300)
