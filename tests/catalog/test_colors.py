"""Colour names of products: the product's colours on synthetic photos of known colours, not the backdrop's;
stored on save, served by the API and filtered with ?color=."""

import io
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image, ImageDraw
from rest_framework.test import APIClient

from catalog.colors import photo_colors
from catalog.models import Product
from catalog.services.products import product_create, product_update

WHITE, GREY = (255, 255, 255), (200, 200, 200)


def garment_photo(*, colour, backdrop=WHITE, top=None, floor_boards=False, size=(400, 533)) -> Image.Image:
    """A garment-shaped block of `colour` (its upper part `top` when given) on a backdrop or wooden boards."""
    photo = Image.new("RGB", size, backdrop)
    draw = ImageDraw.Draw(photo)
    if floor_boards:
        for x in range(0, size[0], 40):
            draw.rectangle((x, 0, x + 19, size[1]), fill=(150, 100, 60))
            draw.rectangle((x + 20, 0, x + 39, size[1]), fill=(120, 80, 45))
    draw.rectangle((110, 90, 290, 450), fill=colour)
    draw.rectangle((60, 90, 340, 170), fill=top or colour)
    return photo


def jpeg(photo: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        (garment_photo(colour=(30, 60, 200)), ["blue"]),
        (garment_photo(colour=(20, 30, 80), backdrop=GREY), ["blue"]),
        (garment_photo(colour=(200, 20, 30)), ["red"]),
        (garment_photo(colour=(20, 20, 20)), ["black"]),
        (garment_photo(colour=(40, 140, 60), backdrop=GREY), ["green"]),
        (garment_photo(colour=(245, 215, 40)), ["yellow"]),
        (garment_photo(colour=(120, 70, 30)), ["brown"]),
        (garment_photo(colour=(240, 130, 170)), ["pink"]),
        (garment_photo(colour=(120, 40, 160)), ["purple"]),
        (garment_photo(colour=(240, 120, 20)), ["orange"]),
        (garment_photo(colour=(128, 128, 128)), ["grey"]),
        # A white shirt on a white backdrop: nothing differs from the border, so the centre decides.
        (garment_photo(colour=(250, 250, 250)), ["white"]),
        # The floor's browns are the backdrop, not the product.
        (garment_photo(colour=(30, 60, 200), floor_boards=True), ["blue"]),
        (garment_photo(colour=(200, 20, 30), top=(250, 250, 250), backdrop=GREY), ["red", "white"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else None,
)
def test_the_products_colours_are_named_not_the_backdrops(photo: Image.Image, expected: list[str]) -> None:
    assert photo_colors(jpeg(photo)) == expected


def photo_upload(photo: Image.Image, name: str = "photo.jpg") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def new_product(sku: str, colour, **options) -> Product:
    return product_create(
        name=f"Dress {sku}",
        sku=sku,
        price=Decimal("10"),
        image=photo_upload(garment_photo(colour=colour)),
        **options,
    )


@pytest.mark.django_db
def test_a_saved_photo_names_the_colours_and_a_new_photo_names_them_again() -> None:
    product = new_product("D-1", (30, 60, 200))
    assert product.colors == ["blue"]

    product_update(product=product, image=photo_upload(garment_photo(colour=(200, 20, 30))))

    product.refresh_from_db()
    assert product.colors == ["red"]


@pytest.mark.django_db
def test_the_storefront_filters_by_colour_and_refuses_an_unknown_one() -> None:
    new_product("D-1", (30, 60, 200))
    new_product("D-2", (200, 20, 30))
    new_product("D-3", (200, 20, 30), is_published=False)
    client = APIClient()

    blue = client.get("/api/v1/products/", {"color": "blue"}).json()
    red = client.get("/api/v1/products/", {"color": "red"}).json()
    unknown = client.get("/api/v1/products/", {"color": "teal"})

    assert [(item["name"], item["colors"]) for item in blue["results"]] == [("Dress D-1", ["blue"])]
    assert [item["name"] for item in red["results"]] == ["Dress D-2"]
    assert unknown.status_code == 400
    assert "teal" in unknown.json()["color"][0]


@pytest.mark.django_db
def test_fill_colors_names_products_saved_before_colours_and_reports_an_unreadable_photo(capsys) -> None:
    named = new_product("D-1", (40, 140, 60))
    missing = new_product("D-2", (40, 140, 60))
    Product.objects.update(colors=[])
    missing.image.storage.delete(missing.image.name)

    call_command("fill_colors")

    captured = capsys.readouterr()
    assert "colours named for 1 products" in captured.out
    assert f"product {missing.pk}: cannot read its photo" in captured.err
    assert Product.objects.get(pk=named.pk).colors == ["green"]
    assert Product.objects.get(pk=missing.pk).colors == []


@pytest.mark.django_db
def test_the_admin_shows_a_products_colours(admin_client) -> None:
    product = new_product("D-1", (200, 20, 30))

    page = admin_client.get(f"/admin/catalog/product/{product.pk}/change/")

    assert page.status_code == 200
    assert "Colours" in page.text and '<div class="readonly">red</div>' in page.text
