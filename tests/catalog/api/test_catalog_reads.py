"""What the storefront reads: published products, their categories, filters, search, order and pages."""

from decimal import Decimal

import pytest
from django.urls import reverse

from catalog.models import Category

pytestmark = pytest.mark.django_db

PRODUCTS_URL = reverse("catalog-api:product-list")
CATEGORIES_URL = reverse("catalog-api:category-list")
PUBLIC_PRODUCT_FIELDS = {
    "id",
    "name",
    "slug",
    "description",
    "price",
    "image_url",
    "colors",
    "category",
    "created_at",
    "updated_at",
}


def product_url(id_or_slug) -> str:
    return reverse("catalog-api:product-detail", kwargs={"id_or_slug": id_or_slug})


def names(response) -> list[str]:
    return [product["name"] for product in response.json()["results"]]


def test_anonymous_list_shows_published_products_with_what_a_shop_page_needs_and_no_internals(
    anonymous_client, make_product, category, media_root
):
    shirt = make_product(
        name="Linen shirt", price=Decimal("29.50"), description="Loose fit.", category=category
    )
    make_product(name="Draft coat", is_published=False)

    response = anonymous_client.get(PRODUCTS_URL)

    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 1 and body["next"] is None and body["previous"] is None
    (listed,) = body["results"]
    assert set(listed) == PUBLIC_PRODUCT_FIELDS
    assert listed["id"] == shirt.pk and listed["slug"] == "linen-shirt"
    assert listed["price"] == "29.50" and listed["description"] == "Loose fit."
    assert listed["category"] == {"slug": "shirt", "name": "Shirt"}
    assert listed["image_url"] == f"http://testserver/media/{shirt.image.name}"
    assert (media_root / shirt.image.name).is_file()


def test_a_product_is_found_by_id_or_by_slug(anonymous_client, make_product):
    shirt = make_product(name="Linen shirt")

    by_id = anonymous_client.get(product_url(shirt.pk))
    by_slug = anonymous_client.get(product_url("linen-shirt"))

    assert by_id.status_code == by_slug.status_code == 200
    assert by_id.json() == by_slug.json()
    assert set(by_id.json()) == PUBLIC_PRODUCT_FIELDS


def test_a_slug_made_of_digits_still_finds_its_product(anonymous_client, make_product):
    product = make_product(name="1984")

    response = anonymous_client.get(product_url("1984"))

    assert product.pk != 1984
    assert response.status_code == 200 and response.json()["id"] == product.pk


@pytest.mark.parametrize("id_or_slug", ["no-such-product", "999999", "9" * 40, "bad slug!", "%00"])
def test_an_unknown_or_malformed_id_or_slug_is_a_json_404(anonymous_client, make_product, id_or_slug):
    make_product()

    response = anonymous_client.get(f"{PRODUCTS_URL}{id_or_slug}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "No product with this id or slug."}


def test_unpublished_products_are_hidden_from_anonymous_and_customers_but_not_from_staff(
    client_for, make_product
):
    draft = make_product(name="Draft coat", is_published=False)

    statuses = {
        caller: client_for(caller).get(product_url(draft.slug)).status_code
        for caller in ("anonymous", "customer", "staff")
    }
    listed_to_customer = client_for("customer").get(PRODUCTS_URL).json()["count"]

    assert statuses == {"anonymous": 404, "customer": 404, "staff": 200}
    assert listed_to_customer == 0


def test_filter_by_category_slug(anonymous_client, make_product, category, other_category):
    make_product(name="Linen shirt", category=category)
    make_product(name="Oxford shirt", category=category)
    make_product(name="Chinos", category=other_category)
    make_product(name="Unfiled scarf")

    shirts = anonymous_client.get(PRODUCTS_URL, {"category": "shirt", "ordering": "name"})
    unknown = anonymous_client.get(PRODUCTS_URL, {"category": "hats"})

    assert names(shirts) == ["Linen shirt", "Oxford shirt"]
    assert unknown.status_code == 200 and unknown.json()["count"] == 0


def test_search_matches_words_in_the_name_ignoring_case(anonymous_client, make_product):
    make_product(name="Linen Shirt")
    make_product(name="Oxford shirt")
    make_product(name="Linen trousers")

    shirts = anonymous_client.get(PRODUCTS_URL, {"search": "SHIRT", "ordering": "name"})
    linen_shirts = anonymous_client.get(PRODUCTS_URL, {"search": "linen shirt"})

    assert names(shirts) == ["Linen Shirt", "Oxford shirt"]
    assert names(linen_shirts) == ["Linen Shirt"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"search": "shirt\x00"}, "search"),
        ({"search": " ".join(["shirt"] * 11)}, "search"),
        ({"category": "\x00"}, "category"),
        ({"category": "c" * 101}, "category"),
    ],
    ids=["NUL in search", "eleven search words", "NUL in category", "category slug too long"],
)
def test_a_filter_value_out_of_bounds_is_a_400_naming_it(anonymous_client, make_product, query, parameter):
    make_product()

    response = anonymous_client.get(PRODUCTS_URL, query)

    assert response.status_code == 400
    assert list(response.json()) == [parameter]


def test_ordering_by_name_price_and_creation_newest_first_by_default(anonymous_client, make_product):
    make_product(name="Beret", price=Decimal("30.00"))
    make_product(name="Anorak", price=Decimal("90.00"))
    make_product(name="Cap", price=Decimal("12.00"))

    def ordered(ordering=None) -> list[str]:
        return names(anonymous_client.get(PRODUCTS_URL, {"ordering": ordering} if ordering else {}))

    assert ordered() == ["Cap", "Anorak", "Beret"]
    assert ordered("created_at") == ["Beret", "Anorak", "Cap"]
    assert ordered("name") == ["Anorak", "Beret", "Cap"]
    assert ordered("-price") == ["Anorak", "Beret", "Cap"]
    assert ordered("price") == ["Cap", "Beret", "Anorak"]
    # Fields not offered for ordering (or unknown) are ignored, not an error.
    assert ordered("sku") == ordered("nonsense") == ["Cap", "Anorak", "Beret"]


def test_equal_prices_page_without_repeats_or_gaps(anonymous_client, make_product):
    created = {make_product(name=f"Sock {number}", price=Decimal("5.00")).pk for number in range(7)}

    seen = []
    for offset in range(0, 7, 3):
        page = anonymous_client.get(PRODUCTS_URL, {"ordering": "price", "limit": 3, "offset": offset}).json()
        seen += [product["id"] for product in page["results"]]

    assert sorted(seen) == sorted(created)


def test_pages_default_to_20_and_never_exceed_100_whatever_limit_is_asked(anonymous_client, make_product):
    for number in range(105):
        make_product(name=f"Tee {number:03d}")

    default = anonymous_client.get(PRODUCTS_URL).json()
    huge = anonymous_client.get(PRODUCTS_URL, {"limit": 10**30}).json()
    endless = anonymous_client.get(PRODUCTS_URL, {"limit": "9" * 5000}).json()
    last = anonymous_client.get(PRODUCTS_URL, {"limit": 100, "offset": "0" * 30 + "100"}).json()
    beyond = anonymous_client.get(PRODUCTS_URL, {"offset": "9" * 5000})

    assert len(default["results"]) == 20 and default["count"] == 105
    assert len(huge["results"]) == 100 and "limit=100" in huge["next"]
    assert len(endless["results"]) == 100
    assert len(last["results"]) == 5 and last["next"] is None
    assert beyond.status_code == 200 and beyond.json()["results"] == []


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"limit": "lots"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"offset": "-3"}, "offset"),
        ({"offset": "null"}, "offset"),
    ],
)
@pytest.mark.parametrize("url", [PRODUCTS_URL, CATEGORIES_URL])
def test_a_limit_or_offset_that_is_not_a_whole_number_is_a_400_naming_it(
    anonymous_client, url, query, parameter
):
    response = anonymous_client.get(url, query)

    assert response.status_code == 400
    assert response.json() == {
        parameter: [f"Must be a whole number of at least {1 if parameter == 'limit' else 0}."]
    }


@pytest.mark.parametrize("product_count", [5, 50])
def test_the_list_runs_the_same_two_queries_whatever_the_page_size(
    anonymous_client, make_product, category, django_assert_num_queries, product_count
):
    for number in range(product_count):
        make_product(name=f"Shirt {number}", category=category)

    # One COUNT for the pager, one SELECT joined with the category.
    with django_assert_num_queries(2):
        response = anonymous_client.get(PRODUCTS_URL, {"limit": 100})

    assert len(response.json()["results"]) == product_count


@pytest.mark.parametrize("category_count", [3, 30])
def test_the_category_list_runs_the_same_two_queries_whatever_its_length(
    anonymous_client, django_assert_num_queries, category_count
):
    Category.objects.bulk_create(
        Category(name=f"Category {number}", slug=f"category-{number}") for number in range(category_count)
    )

    with django_assert_num_queries(2):
        response = anonymous_client.get(CATEGORIES_URL, {"limit": 100})

    assert response.json()["count"] == category_count


def test_categories_list_active_ones_with_their_number_of_published_products(
    anonymous_client, make_product, category, other_category
):
    Category.objects.create(name="Retired hats", slug="retired-hats", is_active=False)
    make_product(category=category)
    make_product(category=category)
    make_product(category=category, is_published=False)

    response = anonymous_client.get(CATEGORIES_URL)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"slug": "shirt", "name": "Shirt", "product_count": 2},
        {"slug": "trouser", "name": "Trouser", "product_count": 0},
    ]
