"""Photos through the API: a phone photo is served without its metadata, and no caller without
`catalog.view_product` ever gets the URL of an unpublished product's photo, from any endpoint."""

from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, get_resolver, reverse

from catalog.models import Product, ProductImage
from catalog.services.products import product_update
from tests.catalog.camera_photos import assert_served_clean_and_upright, gps_tagged_jpeg

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"


def api_get_urls(product: Product) -> list[str]:
    """Every API route, for this product where it names one, with the queries a storefront sends."""
    urls = []
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) != API_PREFIX:
            continue
        for route in pattern.url_patterns:
            assert isinstance(route, URLPattern), route
            path = str(route.pattern).replace("<str:id_or_slug>", "{}")
            urls += [f"/{API_PREFIX}{path.format(key)}" for key in {product.pk, product.slug}]
    queries = [f"?search={product.name}", f"?category={product.category.slug}", "?ordering=name", "?limit=99"]
    return sorted(set(urls)) + [f"/{API_PREFIX}products/{query}" for query in queries]


def test_a_phone_photo_posted_through_the_api_is_served_without_exif_and_upright(
    staff_client, media_root: Path
):
    upload = SimpleUploadedFile("IMG_0042.jpg", gps_tagged_jpeg(), content_type="image/jpeg")

    response = staff_client.post(
        reverse("catalog-api:product-list"),
        {"name": "Wool coat", "sku": "COAT-1", "price": "120.00", "image": upload},
        format="multipart",
    )

    assert response.status_code == 201, response.content
    image_url = response.json()["image_url"]
    product = Product.objects.get()
    assert image_url == f"http://testserver/media/{product.image.name}"
    assert_served_clean_and_upright((media_root / product.image.name).read_bytes())


@pytest.mark.parametrize("caller", ["anonymous", "customer"])
def test_callers_without_view_permission_never_see_an_unpublished_products_photo_url(
    caller, client_for, make_product, category
):
    make_product(name="Published coat", category=category)
    draft = make_product(name="Draft coat", category=category, is_published=False)
    withdrawn = make_product(name="Withdrawn coat", category=category)
    withdrawn = product_update(product=withdrawn, is_published=False)
    client = client_for(caller)

    for product in (draft, withdrawn):
        for url in api_get_urls(product):
            response = client.get(url)
            assert response.status_code < 500, url
            assert product.image.name not in response.content.decode(), url

    # The same calls do show it to staff: the check above looks where a URL would be.
    staff_sees = client_for("staff").get(reverse("catalog-api:product-detail", args=[draft.pk]))
    assert draft.image.name in staff_sees.json()["image_url"]


def test_a_published_products_photo_url_is_public(anonymous_client, make_product):
    product = make_product(price=Decimal("5"))

    listed = anonymous_client.get(reverse("catalog-api:product-list")).json()["results"]

    assert [item["image_url"] for item in listed] == [f"http://testserver/media/{product.image.name}"]


def test_unpublishing_moves_the_photos_so_urls_handed_out_before_stop_working(
    make_product, media_root, make_upload, django_capture_on_commit_callbacks
):
    product = make_product(name="Linen coat")
    extra = ProductImage.objects.create(product=product, image=make_upload("side.png", image_format="PNG"))
    public_names = [product.image.name, extra.image.name]
    served = [(media_root / name).read_bytes() for name in public_names]

    with django_capture_on_commit_callbacks(execute=True):
        product = product_update(product=product, is_published=False)

    extra.refresh_from_db()
    moved_names = [product.image.name, extra.image.name]
    assert not set(moved_names) & set(public_names)
    assert not any((media_root / name).exists() for name in public_names)
    assert [(media_root / name).read_bytes() for name in moved_names] == served
