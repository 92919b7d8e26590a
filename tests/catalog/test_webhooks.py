"""Webhooks without a worker: which changes make events, the signature, and each attempt's outcome against a
real HTTP receiver on this machine (the worker's part: tests/e2e/test_webhooks.py)."""

import hashlib
import hmac
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from catalog.models import Category, Product, WebhookDelivery, WebhookEndpoint
from catalog.services.categories import categories_merge
from catalog.services.products import product_create, product_update
from catalog.services.webhooks import webhook_delivery_attempt, webhook_signature
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db
EVENTS = WebhookEndpoint.Event


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def subscribe(url: str, events=(EVENTS.PRODUCT_CLASSIFIED, EVENTS.PRODUCT_CATEGORY_CHANGED), **fields):
    return WebhookEndpoint.objects.create(name="Storefront", url=url, events=list(events), **fields)


def shirt(make_upload, sku: str = "SH-1") -> Product:
    return product_create(name="Shirt", sku=sku, price=Decimal("10"), image=make_upload())


def test_the_signature_is_hmac_sha256_of_the_time_and_the_body_with_the_secret() -> None:
    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()

    signature = webhook_signature(secret="s3cret", timestamp=1700000000, body=b"{}")

    assert signature == f"t=1700000000,v1={expected}"


def test_a_person_changing_the_category_makes_one_event_per_subscribed_active_endpoint(make_upload) -> None:
    subscribed = subscribe("http://shop.example/hooks")
    subscribe("http://other.example/hooks", events=[EVENTS.PRODUCT_CLASSIFIED])
    subscribe("http://off.example/hooks", is_active=False)
    product = shirt(make_upload)
    dresses = Category.objects.create(name="Dress", slug="dress")

    product_update(product=product, category=dresses)
    product_update(product=product, category=dresses)

    delivery = WebhookDelivery.objects.get()
    assert delivery.endpoint == subscribed and delivery.event == EVENTS.PRODUCT_CATEGORY_CHANGED
    assert delivery.payload["data"] == {
        "id": product.pk,
        "sku": "SH-1",
        "slug": product.slug,
        "status": "pending",
        "category": "dress",
        "category_source": "person",
        "previous_category": None,
    }


def test_a_change_rolled_back_tells_nobody(make_upload) -> None:
    subscribe("http://shop.example/hooks")
    product = shirt(make_upload)

    with pytest.raises(RuntimeError), transaction.atomic():
        product_update(product=product, category=Category.objects.create(name="Dress", slug="dress"))
        raise RuntimeError("the request failed after the change")

    assert not WebhookDelivery.objects.exists()


def test_merging_categories_tells_of_each_product_moved(make_upload) -> None:
    subscribe("http://shop.example/hooks")
    tops = Category.objects.create(name="Tops", slug="tops")
    shirts = Category.objects.create(name="Shirts", slug="shirts")
    first, second = shirt(make_upload, "SH-1"), shirt(make_upload, "SH-2")
    for product in (first, second):
        product_update(product=product, category=shirts)
    WebhookDelivery.objects.all().delete()

    categories_merge(into=tops, merged=[shirts])

    moved = {d.payload["data"]["id"]: d.payload["data"] for d in WebhookDelivery.objects.all()}
    assert set(moved) == {first.pk, second.pk}
    assert {(data["category"], data["previous_category"]) for data in moved.values()} == {("tops", "shirts")}


def test_a_delivery_answered_2xx_is_delivered_signed_with_its_id(make_upload, receiver) -> None:
    endpoint = subscribe(receiver.url)
    product_update(product=shirt(make_upload), category=Category.objects.create(name="Dress", slug="dress"))
    delivery = WebhookDelivery.objects.get()

    webhook_delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED and delivery.attempts == 1
    assert delivery.last_status_code == 200 and delivery.delivered_at is not None
    (post,) = receiver.posts()
    timestamp = post.headers["X-Vitrine-Signature"].split(",")[0].removeprefix("t=")
    assert post.headers["X-Vitrine-Signature"] == webhook_signature(
        secret=endpoint.secret, timestamp=int(timestamp), body=post.body
    )
    assert post.headers["X-Vitrine-Event"] == "product.category_changed"
    assert post.headers["X-Vitrine-Delivery"] == str(delivery.delivery_id) == post.json()["id"]
    assert post.json()["data"]["category"] == "dress"


def test_a_refused_delivery_waits_with_backoff_then_gives_up_at_the_last_attempt(
    make_upload, receiver, settings
) -> None:
    settings.VITRINE_WEBHOOK_MAX_ATTEMPTS = 2
    settings.VITRINE_WEBHOOK_RETRY_BASE_S = 30
    subscribe(receiver.url)
    receiver.answers = [503, 503]
    product_update(product=shirt(make_upload), category=Category.objects.create(name="Dress", slug="dress"))
    delivery = WebhookDelivery.objects.get()

    first = webhook_delivery_attempt(delivery_id=delivery.pk)
    too_early = webhook_delivery_attempt(delivery_id=delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    last = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert first.status == WebhookDelivery.Status.PENDING and first.attempts == 1
    assert timedelta(seconds=25) < first.next_attempt_at - timezone.now() <= timedelta(seconds=30)
    assert too_early is None
    assert last.status == WebhookDelivery.Status.FAILED and last.attempts == 2
    assert last.last_status_code == 503 and "receiver is down for maintenance" in last.last_error
    assert len(receiver.posts()) == 2


def test_an_unreachable_receiver_is_recorded_and_tried_again_later(make_upload) -> None:
    subscribe("http://127.0.0.1:9/hooks")
    product_update(product=shirt(make_upload), category=Category.objects.create(name="Dress", slug="dress"))

    delivery = webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get().pk)

    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.last_status_code is None
    assert "refused" in delivery.last_error.lower()


def test_the_admin_lists_deliveries_and_sends_a_failed_one_again(make_upload, admin_client) -> None:
    subscribe("http://shop.example/hooks")
    product_update(product=shirt(make_upload), category=Category.objects.create(name="Dress", slug="dress"))
    WebhookDelivery.objects.update(status=WebhookDelivery.Status.FAILED, attempts=8)
    delivery = WebhookDelivery.objects.get()

    listing = admin_client.get("/admin/catalog/webhookdelivery/")
    admin_client.post(
        "/admin/catalog/webhookdelivery/", {"action": "send_again", "_selected_action": [delivery.pk]}
    )

    assert listing.status_code == 200 and "product.category_changed" in listing.text
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.attempts == 0


def test_the_admin_subscription_form_needs_an_event_and_shows_the_secret_once_saved(admin_client) -> None:
    add_url = "/admin/catalog/webhookendpoint/add/"
    empty = admin_client.post(add_url, {"name": "Shop", "url": "https://x.example/h"})
    saved = admin_client.post(
        add_url,
        {"name": "Shop", "url": "https://x.example/h", "events": ["product.classified"], "is_active": "on"},
    )

    assert empty.status_code == 200 and "This field is required" in empty.text
    assert saved.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["product.classified"] and len(endpoint.secret) >= 40
    assert endpoint.secret in admin_client.get(f"/admin/catalog/webhookendpoint/{endpoint.pk}/change/").text
