"""Fixtures every test may use: a private MEDIA_ROOT per test, and real image files made on the fly.

pytest-django already provides `admin_user` and `admin_client` (a logged-in superuser), `settings` and
`django_capture_on_commit_callbacks`.
"""

import io
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.e2e.object_storage import S3Server, in_bucket_settings
from tests.e2e.support import tiny_model_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ImageBytesFactory = Callable[..., bytes]
UploadFactory = Callable[..., SimpleUploadedFile]

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    """Uploads of each test land in their own empty folder, so a test can see exactly what was stored."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def stored_files(media_root: Path) -> Callable[[], list[Path]]:
    """stored_files() -> every file now under this test's MEDIA_ROOT."""
    return lambda: sorted(path for path in media_root.rglob("*") if path.is_file())


@pytest.fixture
def make_image_bytes() -> ImageBytesFactory:
    """make_image_bytes("PNG", size=(40, 30), colour=(0, 128, 255), noise=False) -> the file's bytes.

    noise=True fills the image with random pixels, so it compresses badly (for size limits) and two
    calls with different seeds give different bytes.
    """

    def make(
        image_format: str = "JPEG",
        *,
        size: tuple[int, int] = (32, 32),
        colour: tuple[int, int, int] = (200, 40, 40),
        noise: bool = False,
        seed: int = 0,
    ) -> bytes:
        if noise:
            pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
            image = Image.frombytes("RGB", size, pixels)
        else:
            image = Image.new("RGB", size, colour)
        buffer = io.BytesIO()
        image.save(buffer, format=image_format)
        return buffer.getvalue()

    return make


@pytest.fixture
def make_upload(make_image_bytes: ImageBytesFactory) -> UploadFactory:
    """make_upload("shirt.png", image_format="PNG") or make_upload("x.jpg", content=b"...") -> an upload."""

    def make(
        name: str = "photo.jpg",
        *,
        content: bytes | None = None,
        image_format: str = "JPEG",
        **image_options,
    ) -> SimpleUploadedFile:
        if content is None:
            content = make_image_bytes(image_format, **image_options)
        return SimpleUploadedFile(name, content, content_type=CONTENT_TYPES.get(image_format, "image/jpeg"))

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed_dense model trained one epoch on a few Fashion-MNIST images (seconds), once per test session."""
    return tiny_model_dir(base_dir=tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible server over HTTP (moto's, in a subprocess) with one bucket, for this session."""
    server = S3Server(log_path=tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def in_bucket(settings, s3_server: S3Server) -> S3Server:
    """This test process keeps photos and model versions in the bucket, which starts empty."""
    s3_server.empty()
    settings.STORAGES = in_bucket_settings(s3_server)
    return s3_server
