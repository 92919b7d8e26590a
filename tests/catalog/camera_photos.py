"""Photos as a phone saves them: EXIF with a GPS position and an orientation, XMP, a comment, ICC."""

import functools
import io

from PIL import ExifTags, Image, ImageCms

# 60 wide, 20 high as stored; the camera says "rotate 90° clockwise to show", so it shows 20 wide, 60 high.
STORED_SIZE = (60, 20)
UPRIGHT_SIZE = (20, 60)
ROTATE_CLOCKWISE = 6
# A left band of this colour in the stored pixels is the top band of the upright picture.
BAND = (0, 0, 255)
BACKGROUND = (200, 40, 40)
# Text that may appear in no byte of a served photo.
SECRETS = (b"PhoneMaker", b"secret-xmp", b"secret-comment")


# Made once: an ICC profile carries its creation time, so two calls a second apart would differ.
@functools.cache
def gps_tagged_jpeg() -> bytes:
    """A JPEG from a phone: GPS position, orientation, camera make, XMP, a comment and an sRGB ICC profile."""
    picture = Image.new("RGB", STORED_SIZE, BACKGROUND)
    picture.paste(BAND, (0, 0, 10, STORED_SIZE[1]))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = ROTATE_CLOCKWISE
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    buffer = io.BytesIO()
    picture.save(
        buffer,
        format="JPEG",
        exif=exif.tobytes(),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>',
        comment=b"secret-comment",
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    return buffer.getvalue()


def assert_served_clean_and_upright(content: bytes, *, image_format: str = "JPEG") -> None:
    """`content` is the phone photo as it must be served: no metadata at all, upright, same format."""
    for secret in SECRETS:
        assert secret not in content, secret
    with Image.open(io.BytesIO(content)) as served:
        assert served.format == image_format
        assert dict(served.getexif()) == {}
        assert not {"exif", "xmp", "comment", "icc_profile"} & set(served.info)
        assert served.size == UPRIGHT_SIZE
        top, bottom = served.convert("RGB").getpixel((10, 4)), served.convert("RGB").getpixel((10, 50))
    assert _near(top, BAND) and _near(bottom, BACKGROUND), (top, bottom)


def _near(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, expected, strict=True))
