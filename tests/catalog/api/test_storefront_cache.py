"""The storefront's reads: conditional GET (ETag, Last-Modified, 304) and the shared page cache in the real
Redis, invalidated by every kind of writer, in this process and in another one."""

import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import connection, transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date
from rest_framework.test import APIClient

from catalog import storefront_cache
from catalog.models import Category, Product
from catalog.services.categories import categories_merge, categories_retire
from catalog.services.classification import product_file_from_prediction, products_mark_queued
from catalog.services.products import product_update

pytestmark = pytest.mark.django_db

PRODUCTS_URL = reverse("catalog-api:product-list")
CATEGORIES_URL = reverse("catalog-api:category-list")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def product_url(product: Product) -> str:
    return reverse("catalog-api:product-detail", kwargs={"id_or_slug": product.pk})


@pytest.fixture(autouse=True)
def storefront_cache_on(settings, monkeypatch):
    """The cache on (the suite runs with it off), a generation no earlier test cached pages under, and no
    outage remembered from an earlier test."""
    settings.VITRINE_API_CACHE_SECONDS = 60
    monkeypatch.setattr(storefront_cache, "_reads_paused_until", 0.0)
    storefront_cache.catalog_generation_replace()


def rename_behind_the_cache(product: Product, name: str) -> None:
    """Changes the row as no writer of the project does (raw SQL): the cache cannot know."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_product SET name = %s WHERE id = %s", [name, product.pk])


def list_names(client) -> list[str]:
    return [product["name"] for product in client.get(PRODUCTS_URL).json()["results"]]


# Conditional GET


@pytest.mark.parametrize("url", ["list", "detail", "categories"])
def test_a_read_carries_an_etag_and_answers_304_to_a_caller_who_has_it(anonymous_client, make_product, url):
    product = make_product(name="Linen shirt")
    path = {"list": PRODUCTS_URL, "detail": product_url(product), "categories": CATEGORIES_URL}[url]

    first = anonymous_client.get(path)
    again = anonymous_client.get(path, HTTP_IF_NONE_MATCH=first["ETag"])
    other = anonymous_client.get(path, HTTP_IF_NONE_MATCH='"not-this-one"')

    assert first.status_code == 200 and first["ETag"].startswith('"')
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == first["ETag"]
    assert other.status_code == 200 and other.content == first.content
    assert {"Accept", "Authorization", "Cookie"} <= {v.strip() for v in first["Vary"].split(",")}
    assert "no-cache" in first["Cache-Control"] and "private" not in first["Cache-Control"]


def test_the_etag_changes_when_the_product_does(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    first = anonymous_client.get(product_url(product))

    product_update(product=product, name="Wool shirt")
    after = anonymous_client.get(product_url(product), HTTP_IF_NONE_MATCH=first["ETag"])

    assert after.status_code == 200 and after.json()["name"] == "Wool shirt"
    assert after["ETag"] != first["ETag"]


def test_a_product_answers_last_modified_and_304_to_if_modified_since(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    changed_at = timezone.now() - timedelta(minutes=5)
    Product.objects.filter(pk=product.pk).update(updated_at=changed_at)

    first = anonymous_client.get(product_url(product))
    same = anonymous_client.get(product_url(product), HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    older = anonymous_client.get(
        product_url(product), HTTP_IF_MODIFIED_SINCE=http_date(changed_at.timestamp() - 60)
    )

    assert first["Last-Modified"] == http_date(int(changed_at.timestamp()))
    assert same.status_code == 304
    assert older.status_code == 200


def test_a_change_made_this_second_gives_no_last_modified_that_a_later_change_could_share(
    anonymous_client, make_product
):
    product = make_product(name="Linen shirt")

    response = anonymous_client.get(product_url(product))

    assert response.status_code == 200 and not response.has_header("Last-Modified")


def test_staff_answers_are_private_and_still_answer_304(staff_client, make_product):
    product = make_product(name="Linen shirt")

    first = staff_client.get(product_url(product))
    again = staff_client.get(product_url(product), HTTP_IF_NONE_MATCH=first["ETag"])

    assert "private" in first["Cache-Control"]
    assert again.status_code == 304


# The shared cache


def test_a_cached_page_is_the_same_bytes_and_reads_no_database(
    anonymous_client, make_product, django_assert_num_queries
):
    product = make_product(name="Linen shirt")
    first = anonymous_client.get(PRODUCTS_URL, {"limit": 100})
    rename_behind_the_cache(product, "Renamed by raw SQL")

    with django_assert_num_queries(0):
        second = anonymous_client.get(PRODUCTS_URL, {"limit": 100})

    assert second.status_code == 200
    assert second.content == first.content and second["ETag"] == first["ETag"]
    assert second["Content-Type"] == first["Content-Type"]


def test_the_anonymous_throttle_counts_cached_answers_too(settings, anonymous_client, make_product):
    make_product(name="Linen shirt")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min"}}

    statuses = [anonymous_client.get(PRODUCTS_URL).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_pages_are_kept_per_query_string_and_per_host(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    anonymous_client.get(PRODUCTS_URL, {"limit": 10})
    anonymous_client.get(PRODUCTS_URL, HTTP_HOST="localhost")
    rename_behind_the_cache(product, "Renamed by raw SQL")

    other_query = anonymous_client.get(PRODUCTS_URL, {"limit": 11}).json()
    cached_host = anonymous_client.get(PRODUCTS_URL, HTTP_HOST="localhost").json()
    other_host = anonymous_client.get(PRODUCTS_URL, HTTP_HOST="127.0.0.1").json()

    assert other_query["results"][0]["name"] == "Renamed by raw SQL"
    assert cached_host["results"][0]["name"] == "Linen shirt"
    assert cached_host["results"][0]["image_url"].startswith("http://localhost/")
    assert other_host["results"][0]["image_url"].startswith("http://127.0.0.1/")


def test_the_browsable_api_is_never_cached(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    anonymous_client.get(PRODUCTS_URL, HTTP_ACCEPT="text/html")
    rename_behind_the_cache(product, "Renamed by raw SQL")

    page = anonymous_client.get(PRODUCTS_URL, HTTP_ACCEPT="text/html")

    assert b"Renamed by raw SQL" in page.content


# Every kind of writer invalidates


def test_a_service_edit_shows_on_the_next_request(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    assert list_names(anonymous_client) == ["Linen shirt"]
    anonymous_client.get(product_url(product))

    product_update(product=product, name="Wool shirt")

    assert list_names(anonymous_client) == ["Wool shirt"]
    assert anonymous_client.get(product_url(product)).json()["name"] == "Wool shirt"


def test_unpublishing_removes_the_product_from_the_next_answers(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    assert anonymous_client.get(product_url(product)).status_code == 200
    assert list_names(anonymous_client) == ["Linen shirt"]

    product_update(product=product, is_published=False)

    assert anonymous_client.get(product_url(product)).status_code == 404
    assert list_names(anonymous_client) == []


def test_the_workers_classification_shows_on_the_next_request(
    anonymous_client, make_product, category, model_version
):
    product = make_product(name="Linen shirt")
    assert anonymous_client.get(product_url(product)).json()["category"] is None

    products_mark_queued(product_ids=[product.pk])  # QuerySet.update: no signal
    product_file_from_prediction(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label=category.name,
        confidence=0.99,
        model_version_id=model_version.pk,
        threshold=0.9,
    )

    assert anonymous_client.get(product_url(product)).json()["category"] == {"slug": "shirt", "name": "Shirt"}


def test_queryset_update_bulk_create_and_delete_show_on_the_next_request(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    assert list_names(anonymous_client) == ["Linen shirt"]

    Product.objects.filter(pk=product.pk).update(name="Wool shirt")
    assert list_names(anonymous_client) == ["Wool shirt"]

    Product.objects.bulk_create([Product(**_copy_fields(product, name="Cotton shirt", sku="C", slug="c"))])
    assert sorted(list_names(anonymous_client)) == ["Cotton shirt", "Wool shirt"]

    Product.objects.filter(sku="C").delete()
    assert list_names(anonymous_client) == ["Wool shirt"]


def _copy_fields(product: Product, **changes) -> dict:
    fields = {
        name: getattr(product, name)
        for name in ("price", "image", "image_sha256", "status", "status_changed_at", "is_published")
    }
    return fields | changes


def test_category_rename_retire_and_merge_show_on_the_next_request(
    anonymous_client, make_product, category, other_category
):
    product = make_product(name="Linen shirt", category=category)
    assert anonymous_client.get(product_url(product)).json()["category"]["name"] == "Shirt"
    assert [c["slug"] for c in anonymous_client.get(CATEGORIES_URL).json()["results"]] == ["shirt", "trouser"]

    category.name = "Shirts"
    category.save()
    assert anonymous_client.get(product_url(product)).json()["category"]["name"] == "Shirts"

    categories_retire(categories=[other_category])
    assert [c["slug"] for c in anonymous_client.get(CATEGORIES_URL).json()["results"]] == ["shirt"]

    Category.objects.filter(pk=other_category.pk).update(is_active=True)
    categories_merge(into=other_category, merged=[category])
    assert anonymous_client.get(product_url(product)).json()["category"]["slug"] == "trouser"


def test_admin_edits_show_on_the_next_request(anonymous_client, admin_client, make_product, category):
    product = make_product(name="Linen shirt", category=category)
    assert anonymous_client.get(product_url(product)).json()["category"]["name"] == "Shirt"

    renamed = admin_client.post(
        reverse("admin:catalog_category_change", args=[category.pk]), {"name": "Shirts", "is_active": "on"}
    )
    assert renamed.status_code == 302
    assert anonymous_client.get(product_url(product)).json()["category"]["name"] == "Shirts"

    retired = admin_client.post(
        reverse("admin:catalog_category_changelist"),
        {"action": "retire_categories", "_selected_action": [str(category.pk)]},
    )
    assert retired.status_code == 302
    assert anonymous_client.get(CATEGORIES_URL).json()["results"] == []


def test_the_embedded_default_file_cache_serves_and_is_invalidated(anonymous_client, make_product, tmp_path):
    product = make_product(name="Linen shirt")
    files = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}

    with override_settings(CACHES={"default": django_settings.CACHES["default"], "storefront": files}):
        first = list_names(anonymous_client)
        rename_behind_the_cache(product, "Renamed by raw SQL")
        cached = list_names(anonymous_client)
        product_update(product=product, name="Wool shirt")
        after = list_names(anonymous_client)

    assert (first, cached, after) == (["Linen shirt"], ["Linen shirt"], ["Wool shirt"])


# Staff and anonymous callers


def test_staff_never_get_the_anonymous_page_nor_the_reverse(anonymous_client, staff_client, make_product):
    hidden = make_product(name="Not yet on sale", is_published=False)

    assert anonymous_client.get(product_url(hidden)).status_code == 404
    staff_answer = staff_client.get(product_url(hidden))
    assert staff_answer.status_code == 200 and staff_answer.json()["name"] == "Not yet on sale"
    assert anonymous_client.get(product_url(hidden)).status_code == 404


def test_staff_read_the_database_not_the_cached_page(anonymous_client, staff_client, make_product):
    product = make_product(name="Linen shirt")
    anonymous_client.get(product_url(product))
    rename_behind_the_cache(product, "Renamed by raw SQL")

    assert anonymous_client.get(product_url(product)).json()["name"] == "Linen shirt"
    assert staff_client.get(product_url(product)).json()["name"] == "Renamed by raw SQL"


# Another process writes


@pytest.mark.django_db(transaction=True)
def test_a_write_committed_by_another_process_shows_on_the_next_request(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    assert list_names(anonymous_client) == ["Linen shirt"]
    database = connection.settings_dict
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "REDIS_CACHE_URL": django_settings.CACHES["storefront"]["LOCATION"],
        "VITRINE_API_CACHE_SECONDS": "60",
    }
    # What the worker does: a QuerySet.update inside a transaction, in its own process.
    script = (
        "import django; django.setup()\n"
        "from django.db import transaction\n"
        "from catalog.models import Product\n"
        "with transaction.atomic():\n"
        f"    Product.objects.filter(pk={product.pk}).update(name='Wool shirt')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, check=True, timeout=60)

    assert list_names(anonymous_client) == ["Wool shirt"]


@pytest.mark.django_db(transaction=True)
def test_a_page_cached_before_a_write_committed_is_not_served_after_it(anonymous_client, make_product):
    product = make_product(name="Linen shirt")
    seen = []

    def storefront_reads_meanwhile() -> None:
        # Its own database connection: it sees the rows as they were before the write commits.
        seen.append(list_names(APIClient()))
        connection.close()

    with transaction.atomic():
        Product.objects.filter(pk=product.pk).update(name="Wool shirt")
        reader = threading.Thread(target=storefront_reads_meanwhile)
        reader.start()
        reader.join()

    assert seen == [["Linen shirt"]]
    assert list_names(anonymous_client) == ["Wool shirt"]


# Redis outages


def dead_redis_caches(location: str) -> dict:
    redis = {
        "BACKEND": "config.redis_cache.PooledRedisCache",
        "LOCATION": location,
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }
    # The throttle's counts in the same dead Redis, as production keeps them.
    return {"default": redis, "storefront": redis}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_with_redis_refusing_connections_the_api_answers_from_the_database(anonymous_client, make_product):
    product = make_product(name="Linen shirt")

    with override_settings(CACHES=dead_redis_caches(f"redis://127.0.0.1:{closed_port()}/0")):
        before = list_names(anonymous_client)
        product_update(product=product, name="Wool shirt")
        after = list_names(anonymous_client)
        detail = anonymous_client.get(product_url(product))

    assert (before, after, detail.status_code) == (["Linen shirt"], ["Wool shirt"], 200)


def test_a_redis_that_never_answers_is_waited_for_once_then_skipped(anonymous_client, make_product, caplog):
    make_product(name="Linen shirt")
    # Accepts connections (the kernel's backlog) and never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        with override_settings(CACHES=dead_redis_caches(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")):
            answers = [anonymous_client.get(PRODUCTS_URL) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    waits = [record.getMessage() for record in caplog.records if "unavailable" in record.getMessage()]
    assert sum("storefront cache" in wait for wait in waits) == 1
    assert sum("throttle" in wait for wait in waits) == 3


def test_the_redis_cache_keeps_one_client_per_pool_and_round_trips():
    cache = caches["storefront"]

    cache.set("probe", {"page": b"\x00bytes"}, 10)

    assert cache.get("probe") == {"page": b"\x00bytes"}
    # One server: reads and writes share its pool, and so its one client.
    assert cache._cache.get_client("a") is cache._cache.get_client("b", write=True)
