import hashlib
from io import BytesIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.validators import ProductImageError, validate_product_image
from tests.catalog.bad_files import BAD_FILES, BadFile, image_bytes


def test_there_are_at_least_fifteen_distinct_bad_file_cases():
    assert len({bad.case for bad in BAD_FILES}) >= 15
    assert len({bad.content for bad in BAD_FILES}) >= 15


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda bad: bad.case)
def test_bad_file_is_refused_with_a_one_line_message_naming_file_and_problem(bad: BadFile):
    with pytest.raises(ProductImageError) as refused:
        validate_product_image(SimpleUploadedFile(bad.name, bad.content))

    message = refused.value.messages[0]
    assert message.startswith(f"{bad.name}: ")
    assert bad.message in message
    assert "\n" not in message


def test_file_over_the_configured_cap_is_refused_before_it_is_decoded(settings):
    settings.VITRINE_MAX_UPLOAD_BYTES = 2_000
    photo = image_bytes("PNG", size=(64, 64))
    assert len(photo) > 2_000

    with pytest.raises(ProductImageError) as refused:
        validate_product_image(SimpleUploadedFile("big.png", photo))

    assert "the limit is 2.0 KB" in refused.value.messages[0]
    assert refused.value.code == "too_large"


def test_file_whose_reported_size_is_wrong_is_still_held_to_the_cap(settings):
    settings.VITRINE_MAX_UPLOAD_BYTES = 2_000
    upload = ContentFile(image_bytes("PNG", size=(64, 64)), name="big.png")
    upload.size = 10

    with pytest.raises(ProductImageError, match="the limit is 2.0 KB"):
        validate_product_image(upload)


def test_default_cap_is_ten_megabytes(settings):
    assert settings.VITRINE_MAX_UPLOAD_BYTES == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "image_format"),
    [
        ("shirt.jpg", "JPEG"),
        ("shirt.jpeg", "JPEG"),
        ("SHIRT.JPG", "JPEG"),
        ("shirt.png", "PNG"),
        ("shirt.webp", "WEBP"),
        ("shirt.gif", "GIF"),
    ],
)
def test_jpeg_png_webp_and_gif_photos_are_accepted_and_hashed(name: str, image_format: str):
    content = image_bytes(image_format)
    upload = SimpleUploadedFile(name, content)

    image_sha256 = validate_product_image(upload)

    assert image_sha256 == hashlib.sha256(content).hexdigest()
    assert upload.read() == content, "the file must be left at its start for whoever stores it"


def test_animated_gif_is_accepted():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    assert len(validate_product_image(SimpleUploadedFile("spin.gif", buffer.getvalue()))) == 64


def test_a_very_long_client_file_name_is_judged_whole_and_shortened_in_messages():
    long_name = "x" * 300 + ".jpg"
    assert validate_product_image(SimpleUploadedFile(long_name, image_bytes("JPEG")))

    with pytest.raises(ProductImageError) as refused:
        validate_product_image(SimpleUploadedFile(long_name, b"not a photo"))

    assert len(refused.value.messages[0]) < 200


def test_multi_picture_jpeg_from_a_phone_camera_is_accepted_as_jpeg():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = BytesIO()
    frames[0].save(buffer, format="MPO", save_all=True, append_images=frames[1:])

    assert validate_product_image(SimpleUploadedFile("IMG_0001.JPG", buffer.getvalue()))
    with pytest.raises(ProductImageError, match="the content is a JPEG image but the name ends in .png"):
        validate_product_image(SimpleUploadedFile("IMG_0001.png", buffer.getvalue()))
