"""Every kind of file a shop may upload either becomes a usable RGB photo or a clear one-line ImageError."""

import io
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from classifier.ml.preprocess import MAX_IMAGE_PIXELS, ImageError, open_image, prepare_batch, to_array

from .conftest import encoded_photo, png_header_only

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def saved(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(value) for value in image.getpixel((x, y)))


def assert_colour_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> None:
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= tolerance, (actual, expected)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_open_as_rgb_with_their_colours(format: str) -> None:
    photo = open_image(encoded_photo(format=format, size=(40, 30)), name=f"photo.{format.lower()}")

    assert photo.mode == "RGB"
    assert photo.size == (40, 30)
    assert_colour_close(pixel(photo, 20, 15), (180, 40, 40), tolerance=16)


def test_paths_bytes_and_file_objects_give_the_same_photo(tmp_path) -> None:
    data = encoded_photo(format="PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)

    from_path, from_str, from_bytes, from_file = (
        open_image(path),
        open_image(str(path)),
        open_image(data),
        open_image(io.BytesIO(data)),
    )

    for photo in (from_str, from_bytes, from_file):
        assert photo.tobytes() == from_path.tobytes()


def test_an_upload_already_read_by_a_validator_still_opens() -> None:
    upload = io.BytesIO(encoded_photo(format="JPEG"))
    upload.read()

    assert open_image(upload, name="upload.jpg").size == (40, 30)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    data = saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2

    assert_colour_close(pixel(open_image(data), 8, 8), RED)


@pytest.mark.parametrize(
    ("image", "format", "expected_colour"),
    [
        (Image.new("L", (8, 8), 77), "PNG", (77, 77, 77)),
        (Image.new("1", (8, 8), 1), "BMP", WHITE),
        (Image.new("LA", (8, 8), (0, 0)), "PNG", WHITE),
        (Image.new("LA", (8, 8), (0, 255)), "PNG", (0, 0, 0)),
        (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG", WHITE),
        (Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG", (255, 127, 127)),
        (Image.new("RGBA", (8, 8), (255, 0, 0, 255)), "WEBP", RED),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", RED),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF", RED),
    ],
    ids=[
        "L",
        "1-bit",
        "LA-transparent",
        "LA-opaque",
        "RGBA-transparent",
        "RGBA-half",
        "RGBA-webp",
        "CMYK-jpeg",
        "CMYK-tiff",
    ],
)
def test_every_mode_becomes_rgb_with_alpha_flattened_on_white(image, format, expected_colour) -> None:
    photo = open_image(saved(image, format))

    assert photo.mode == "RGB"
    assert_colour_close(pixel(photo, 4, 4), expected_colour, tolerance=3)


@pytest.mark.parametrize("format", ["PNG", "GIF"])
def test_palette_photo_with_and_without_transparency(format: str) -> None:
    palette_photo = Image.new("P", (2, 1), 0)
    palette_photo.putpalette([*RED, *BLUE])
    palette_photo.putpixel((1, 0), 1)

    opaque = open_image(saved(palette_photo, format))
    see_through = open_image(saved(palette_photo, format, transparency=0))

    assert (pixel(opaque, 0, 0), pixel(opaque, 1, 0)) == (RED, BLUE)
    assert (pixel(see_through, 0, 0), pixel(see_through, 1, 0)) == (WHITE, BLUE)


@pytest.mark.parametrize(
    ("values", "format"),
    [
        (np.array([[0, 32768, 65535]], dtype=np.uint16), "PNG"),
        (np.array([[0, 32768, 65535]], dtype=np.int32), "TIFF"),
        (np.array([[0, 500_000, 1_000_000]], dtype=np.int32), "TIFF"),
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "TIFF"),
    ],
    ids=["I;16", "I-16bit-range", "I-wide-range", "F"],
)
def test_high_bit_depth_is_scaled_to_8_bits_not_clipped(values: np.ndarray, format: str) -> None:
    photo = open_image(saved(Image.fromarray(values), format))

    assert np.asarray(photo)[0, :, 0].tolist() == [0, 128, 255]


def test_flat_float_image_outside_the_usual_ranges_becomes_black_not_an_error() -> None:
    photo = open_image(saved(Image.fromarray(np.full((4, 4), -7.5, dtype=np.float32)), "TIFF"))

    assert np.asarray(photo).max() == 0


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide x 20 high, red on the left; orientation 6 means "rotate 90 degrees clockwise to view".
    stored = Image.new("RGB", (40, 20), BLUE)
    ImageDraw.Draw(stored).rectangle((0, 0, 19, 19), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = 6

    photo = open_image(saved(stored, "JPEG", exif=exif.tobytes(), quality=95))

    assert photo.size == (20, 40)
    assert_colour_close(pixel(photo, 10, 5), RED, tolerance=30)
    assert_colour_close(pixel(photo, 10, 34), BLUE, tolerance=30)


def test_tiny_and_large_photos_open_and_shape() -> None:
    tiny = open_image(saved(Image.new("RGB", (1, 1), RED), "PNG"))
    large = open_image(saved(Image.new("L", (5000, 4000), 200), "PNG"))

    assert tiny.size == (1, 1)
    assert large.size == (5000, 4000)
    for photo in (tiny, large):
        assert to_array(photo, input_shape=(32, 32, 3), style="photo").shape == (32, 32, 3)
        assert to_array(photo, input_shape=(28, 28, 1), style="fashion-mnist").shape == (28, 28, 1)


@pytest.mark.parametrize(
    ("bad_file", "expected_message"),
    [
        ("empty.jpg", "empty.jpg: empty file"),
        ("notes.jpg", "notes.jpg: not an image"),
        ("catalogue.png", "catalogue.png: not an image"),
        ("truncated.jpg", "truncated.jpg: corrupt or truncated image"),
        ("truncated.png", "truncated.png: corrupt or truncated image"),
        ("bomb.png", "bomb.png: image too large"),
    ],
)
def test_unusable_files_are_refused_with_one_line_naming_the_file(
    bad_image_files, bad_file: str, expected_message: str
) -> None:
    with pytest.raises(ImageError) as refused:
        open_image(bad_image_files[bad_file], name=bad_file)

    assert str(refused.value).startswith(expected_message)
    assert "\n" not in str(refused.value)


def test_missing_file_is_an_image_error(tmp_path) -> None:
    with pytest.raises(ImageError, match="nowhere.jpg: no such file"):
        open_image(tmp_path / "nowhere.jpg", name="nowhere.jpg")


@pytest.mark.parametrize(
    "side",
    [7_000, 10_000, 20_000],
    ids=["over-our-limit", "in-pillow-warning-range", "over-pillow-error-limit"],
)
def test_decompression_bombs_are_refused_from_the_header_without_decoding(side: int) -> None:
    assert side * side > MAX_IMAGE_PIXELS
    bomb = png_header_only(width=side, height=side)

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="image too large"):
            open_image(bomb, name="bomb.png")

    assert time.perf_counter() - started < 0.5


def test_photo_style_keeps_aspect_ratio_and_pads_with_white() -> None:
    tall_red_photo = Image.new("RGB", (50, 100), RED)

    colour = to_array(tall_red_photo, input_shape=(20, 20, 3), style="photo")
    gray = to_array(tall_red_photo, input_shape=(20, 20, 1), style="photo")

    assert colour.dtype == np.uint8 and colour.shape == (20, 20, 3)
    assert colour[10, 0].tolist() == list(WHITE) and colour[10, 19].tolist() == list(WHITE)
    assert_colour_close(tuple(colour[10, 10].tolist()), RED, tolerance=2)
    assert gray.shape == (20, 20, 1)
    assert gray[10, 0, 0] == 255 and gray[10, 10, 0] < 100


def dark_garment_on_white(*, size: tuple[int, int] = (120, 90)) -> Image.Image:
    """A dark, roundish item (a hat seen from above), off-centre, on a white studio background."""
    photo = Image.new("RGB", size, (250, 250, 248))
    ImageDraw.Draw(photo).ellipse((10, 12, 60, 70), fill=(40, 40, 60))
    return photo


def test_fashion_mnist_style_turns_a_dark_on_white_photo_light_on_black_and_centred() -> None:
    frame = to_array(dark_garment_on_white(), input_shape=(28, 28, 1), style="fashion-mnist")[:, :, 0]

    corners = np.concatenate([frame[:4, :4], frame[:4, -4:], frame[-4:, :4], frame[-4:, -4:]])
    garment = frame > 127
    rows, cols = np.nonzero(garment)
    assert corners.mean() < 10
    assert frame[garment].mean() > 200
    assert garment.mean() > 0.5
    # Centred and filling the frame along its longer side, like Fashion-MNIST items.
    assert abs(rows.mean() - 13.5) < 1.5 and abs(cols.mean() - 13.5) < 1.5
    assert rows.max() - rows.min() >= 25


def test_fashion_mnist_style_keeps_fashion_mnist_items_as_they_look(tiny_fashion) -> None:
    items = tiny_fashion.x_test[:30, :, :, 0]

    for item in items:
        bridged = to_array(Image.fromarray(item), input_shape=(28, 28, 1), style="fashion-mnist")[:, :, 0]
        # Not inverted: as much of the frame stays black background, and the pixels still agree in pattern.
        assert abs((bridged < 30).mean() - (item < 30).mean()) < 0.15
        assert np.corrcoef(item.ravel(), bridged.ravel())[0, 1] > 0.3


def test_fashion_mnist_style_copes_with_a_thin_item() -> None:
    belt = Image.new("RGB", (600, 400), WHITE)
    ImageDraw.Draw(belt).line((20, 200, 580, 200), fill=(30, 20, 10), width=1)

    frame = to_array(belt, input_shape=(28, 28, 1), style="fashion-mnist")[:, :, 0]

    assert frame.max() > 100 and (frame > 100).sum() <= 2 * 28


def test_fashion_mnist_style_gives_three_equal_channels_when_asked() -> None:
    frame = to_array(dark_garment_on_white(), input_shape=(32, 32, 3), style="fashion-mnist")

    assert frame.shape == (32, 32, 3)
    assert np.array_equal(frame[:, :, 0], frame[:, :, 2])


def test_prepare_batch_stacks_photos_of_any_size() -> None:
    photos = [Image.new("RGB", (1, 1), RED), dark_garment_on_white(), Image.new("RGB", (300, 200), BLUE)]

    batch = prepare_batch(photos, input_shape=(28, 28, 1), style="fashion-mnist")
    empty = prepare_batch([], input_shape=(96, 96, 3), style="photo")

    assert batch.dtype == np.uint8 and batch.shape == (3, 28, 28, 1)
    assert empty.shape == (0, 96, 96, 3)


def test_unknown_style_or_shape_is_refused() -> None:
    photo = Image.new("RGB", (8, 8), RED)

    with pytest.raises(ValueError, match="unknown preprocessing style 'sketch'"):
        to_array(photo, input_shape=(8, 8, 3), style="sketch")
    with pytest.raises(ValueError, match="input shape"):
        to_array(photo, input_shape=(8, 8, 2), style="photo")
