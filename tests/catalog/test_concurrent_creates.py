"""Two products saved at once with the same SKU or name: two real PostgreSQL transactions, one per thread.

Each thread passes the form's or serializer's uniqueness check before either inserts (a barrier holds them
at the INSERT), so the database's unique index is what catches the second one.
"""

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Product
from catalog.services.products import product_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quiet_classifier(monkeypatch) -> None:
    # Nothing here is about classification; no message goes to the broker.
    monkeypatch.setattr("catalog.services.products._announce_photos_changed", lambda **_: None)


def at_once(monkeypatch, *calls: Callable[[], object]) -> list[object]:
    """Runs each call in its own thread and connection, all reaching their first INSERT together."""
    barrier = threading.Barrier(len(calls), timeout=20)
    waited = threading.local()
    save = Product.save

    def save_together(self, *args, **kwargs):
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Product, "save", save_together)
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            results[index] = call()
        except Exception as error:  # the test asserts on it
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_the_service_gives_the_second_product_of_a_name_the_next_free_slug(monkeypatch, make_upload):
    def create(sku: str) -> Callable[[], Product]:
        return lambda: product_create(name="Wool coat", sku=sku, price=Decimal("99"), image=make_upload())

    results = at_once(monkeypatch, create("COAT-1"), create("COAT-2"))

    assert all(isinstance(result, Product) for result in results), results
    assert sorted(Product.objects.values_list("slug", flat=True)) == ["wool-coat", "wool-coat-2"]


def test_the_api_answers_400_naming_the_sku_when_another_request_took_it(
    monkeypatch, make_upload, admin_user, stored_files
):
    def post(name: str) -> Callable[[], object]:
        def send():
            client = APIClient()
            client.force_authenticate(admin_user)
            body = {"name": name, "sku": "COAT-1", "price": "99.00", "image": make_upload()}
            return client.post(reverse("catalog-api:product-list"), body, format="multipart")

        return send

    responses = at_once(monkeypatch, post("Wool coat"), post("Rain coat"))

    assert sorted(response.status_code for response in responses) == [201, 400], responses
    refused = next(response for response in responses if response.status_code == 400)
    assert refused.json() == {"sku": ["A product with this SKU already exists."]}
    assert Product.objects.count() == 1
    assert len(stored_files()) == 1, "the refused product's photo is not left behind"


def test_the_admin_shows_a_form_error_when_another_save_took_the_sku(monkeypatch, make_upload, admin_user):
    def post(name: str) -> Callable[[], object]:
        def send():
            client = Client()
            client.force_login(admin_user)
            form = {
                "name": name,
                "price": "99.00",
                "sku": "COAT-1",
                "image": make_upload(),
                "is_published": "on",
                "images-TOTAL_FORMS": "0",
                "images-INITIAL_FORMS": "0",
                "images-MIN_NUM_FORMS": "0",
                "images-MAX_NUM_FORMS": "1000",
            }
            return client.post(reverse("admin:catalog_product_add"), form)

        return send

    responses = at_once(monkeypatch, post("Wool coat"), post("Rain coat"))

    assert sorted(response.status_code for response in responses) == [200, 302], responses
    refused = next(response for response in responses if response.status_code == 200)
    assert "Product with this SKU already exists." in refused.content.decode()
    assert Product.objects.count() == 1
