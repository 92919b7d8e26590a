"""Stored photos carry no metadata (EXIF, GPS, XMP, ICC, comments) and stand upright; the uploaded bytes are
kept privately only when VITRINE_KEEP_ORIGINAL_PHOTOS says so; files of replaced photos and deleted products
go once the change commits, and stay when it rolls back."""

import hashlib
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.http import Http404
from django.test import RequestFactory
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from catalog.models import Product, ProductImage
from catalog.photos import ORIGINALS_PREFIX, photo_without_metadata
from catalog.services.products import product_create, product_update
from config.media import media_file
from tests.catalog.camera_photos import SECRETS, assert_served_clean_and_upright, gps_tagged_jpeg

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/catalog/product/add/"


def change_url(product: Product) -> str:
    return f"/admin/catalog/product/{product.pk}/change/"


def phone_upload(name: str = "IMG_0042.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, gps_tagged_jpeg(), content_type="image/jpeg")


def admin_form(product: Product | None = None, *, image=None, extra=(), existing=()) -> dict:
    """The product form as a browser posts it; `existing` rows: (ProductImage, new upload or None, delete)."""
    data = {
        "name": product.name if product else "Linen shirt",
        "description": "",
        "price": "39.90",
        "sku": product.sku if product else "LS-1",
        "category": "",
        "is_published": "on",
        "images-TOTAL_FORMS": str(len(existing) + len(extra)),
        "images-INITIAL_FORMS": str(len(existing)),
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
    }
    if image is not None:
        data["image"] = image
    for index, (photo, upload, delete) in enumerate(existing):
        data |= {f"images-{index}-id": str(photo.pk), f"images-{index}-product": str(photo.product_id)}
        data[f"images-{index}-position"] = str(photo.position)
        if upload is not None:
            data[f"images-{index}-image"] = upload
        if delete:
            data[f"images-{index}-DELETE"] = "on"
    for index, upload in enumerate(extra, start=len(existing)):
        data |= {f"images-{index}-image": upload, f"images-{index}-position": str(index)}
    return data


def exif_with_secret() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    return exif.tobytes()


def png_with_metadata() -> bytes:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret-comment")
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 60), (0, 0, 255, 128)).save(
        buffer,
        format="PNG",
        pnginfo=text,
        exif=exif_with_secret(),
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    return buffer.getvalue()


def webp_with_metadata() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 60), (0, 0, 255)).save(
        buffer, format="WEBP", exif=exif_with_secret(), xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>"
    )
    return buffer.getvalue()


def gif_with_comment() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (20, 60), 3).save(buffer, format="GIF", comment=b"secret-comment", transparency=3)
    return buffer.getvalue()


def test_a_phone_jpeg_is_re_encoded_upright_without_exif_gps_xmp_icc_or_comment():
    assert_served_clean_and_upright(photo_without_metadata(gps_tagged_jpeg()))


@pytest.mark.parametrize(
    ("make", "image_format", "mode"),
    [(png_with_metadata, "PNG", "RGBA"), (webp_with_metadata, "WEBP", "RGB"), (gif_with_comment, "GIF", "P")],
    ids=["png", "webp", "gif"],
)
def test_png_webp_and_gif_keep_format_and_transparency_and_lose_their_metadata(make, image_format, mode):
    served = photo_without_metadata(make())

    for secret in SECRETS:
        assert secret not in served
    with Image.open(io.BytesIO(served)) as image:
        assert (image.format, image.mode, image.size) == (image_format, mode, (20, 60))
        assert dict(image.getexif()) == {} and "icc_profile" not in image.info
        assert image_format != "GIF" or "transparency" in image.info


def test_a_phone_photo_added_in_the_admin_with_an_extra_photo_is_stored_clean_and_upright(
    admin_client, media_root: Path
):
    response = admin_client.post(
        ADD_URL, admin_form(image=phone_upload(), extra=[phone_upload("IMG_0043.jpg")])
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    product = Product.objects.get()
    extra = ProductImage.objects.get()
    assert_served_clean_and_upright((media_root / product.image.name).read_bytes())
    assert_served_clean_and_upright((media_root / extra.image.name).read_bytes())
    # The hash names the photo as uploaded: the same file sent again is the same photo.
    assert product.image_sha256 == hashlib.sha256(gps_tagged_jpeg()).hexdigest()


def test_the_same_phone_photo_uploaded_again_is_the_same_photo(
    make_product, stored_files, django_capture_on_commit_callbacks
):
    product = make_product(image=phone_upload())
    stored = product.image.name

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, image=phone_upload("copy.jpg"))

    assert callbacks == []
    assert product.image.name == stored and len(stored_files()) == 1


def test_originals_are_not_kept_by_default(make_product, stored_files, media_root: Path):
    make_product(image=phone_upload())

    assert not (media_root / ORIGINALS_PREFIX).exists()
    assert len(stored_files()) == 1


def test_with_the_setting_the_original_is_kept_privately_and_never_served(
    settings, make_product, media_root: Path
):
    settings.VITRINE_KEEP_ORIGINAL_PHOTOS = True

    product = make_product(image=phone_upload())

    original = media_root / ORIGINALS_PREFIX / product.image.name
    assert original.read_bytes() == gps_tagged_jpeg()
    assert_served_clean_and_upright((media_root / product.image.name).read_bytes())
    request = RequestFactory().get(f"/media/{ORIGINALS_PREFIX}{product.image.name}")
    for path in (f"{ORIGINALS_PREFIX}{product.image.name}", f"./{ORIGINALS_PREFIX}{product.image.name}"):
        with pytest.raises(Http404):
            media_file(request, path, document_root=str(media_root))
    assert media_file(request, product.image.name, document_root=str(media_root)).status_code == 200


def test_a_replaced_photo_and_its_original_are_removed_after_commit_not_before(
    settings, make_product, make_upload, media_root: Path, django_capture_on_commit_callbacks
):
    settings.VITRINE_KEEP_ORIGINAL_PHOTOS = True
    product = make_product(image=phone_upload())
    old = [media_root / product.image.name, media_root / ORIGINALS_PREFIX / product.image.name]

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, image=make_upload("new.png", image_format="PNG"))
        assert all(path.is_file() for path in old), "nothing is removed before the commit"

    assert all(path.is_file() for path in old)
    for callback in callbacks:
        callback()
    assert not any(path.exists() for path in old)
    assert (media_root / product.image.name).is_file()
    assert (media_root / ORIGINALS_PREFIX / product.image.name).is_file()


def test_a_rolled_back_photo_change_removes_nothing(
    make_product, make_upload, media_root: Path, django_capture_on_commit_callbacks
):
    product = make_product(image=phone_upload())
    old = media_root / product.image.name

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        product_update(product=product, image=make_upload("new.png", image_format="PNG"))
        raise RuntimeError("something after the save failed")

    assert callbacks == []
    product.refresh_from_db()
    assert old.is_file() and (media_root / product.image.name) == old


def test_deleting_a_product_in_the_admin_removes_its_photos_after_commit(
    settings, admin_client, make_product, media_root: Path, stored_files, django_capture_on_commit_callbacks
):
    settings.VITRINE_KEEP_ORIGINAL_PHOTOS = True
    product = make_product(image=phone_upload())
    admin_client.post(change_url(product), admin_form(product, extra=[phone_upload("IMG_0043.jpg")]))
    assert len(stored_files()) == 4, "main and extra photo, each with its original"

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"/admin/catalog/product/{product.pk}/delete/", {"post": "yes"})
        assert len(stored_files()) == 4

    assert response.status_code == 302
    assert not Product.objects.exists() and not ProductImage.objects.exists()
    for callback in callbacks:
        callback()
    assert stored_files() == []


def test_a_rolled_back_delete_removes_nothing(make_product, stored_files, django_capture_on_commit_callbacks):
    product = make_product(image=phone_upload())

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.filter(pk=product.pk).delete()
        raise RuntimeError("the delete is rolled back")

    assert callbacks == []
    assert Product.objects.filter(pk=product.pk).exists() and len(stored_files()) == 1


def test_an_extra_photo_replaced_or_deleted_in_the_admin_leaves_no_file_behind(
    admin_client, make_product, media_root: Path, stored_files, django_capture_on_commit_callbacks
):
    product = make_product()
    admin_client.post(
        change_url(product), admin_form(product, extra=[phone_upload("a.jpg"), phone_upload("b.jpg")])
    )
    replaced, deleted = ProductImage.objects.order_by("position")
    old_files = {media_root / replaced.image.name, media_root / deleted.image.name}

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            change_url(product),
            admin_form(product, existing=[(replaced, phone_upload("c.jpg"), False), (deleted, None, True)]),
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    (kept,) = ProductImage.objects.all()
    assert kept.pk == replaced.pk
    assert_served_clean_and_upright((media_root / kept.image.name).read_bytes())
    assert not old_files & set(stored_files())
    assert set(stored_files()) == {media_root / product.image.name, media_root / kept.image.name}


@pytest.mark.django_db(transaction=True)
def test_with_real_commits_replaced_and_deleted_photos_go_and_rolled_back_ones_stay(
    make_upload, media_root: Path, stored_files
):
    product = product_create(name="Coat", sku="C-1", price=Decimal("5"), image=phone_upload())
    first = media_root / product.image.name

    product = product_update(product=product, image=make_upload("second.jpg", colour=(1, 2, 3)))
    second = media_root / product.image.name
    assert not first.exists() and stored_files() == [second]

    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.filter(pk=product.pk).delete()
        raise RuntimeError("rolled back")
    assert stored_files() == [second]

    Product.objects.filter(pk=product.pk).delete()
    assert stored_files() == []
