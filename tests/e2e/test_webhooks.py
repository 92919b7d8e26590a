"""Webhooks end to end: a photo classified by a real worker is told to a real HTTP receiver, signed, and a
delivery the receiver refuses is tried again by the worker with backoff until it is answered 2xx."""

from collections.abc import Iterator
from decimal import Decimal

import pytest

from catalog.models import Category, Product, WebhookDelivery, WebhookEndpoint
from catalog.services.products import product_create
from catalog.services.webhooks import webhook_signature
from classifier.models import ModelVersion
from tests.e2e.support import Workers, wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def test_a_classification_is_posted_signed_and_a_refused_delivery_is_retried_until_answered(
    workers: Workers, active_model_version: ModelVersion, receiver: WebhookReceiver, photo_upload
) -> None:
    workers.stop_all()
    workers.start(extra_env={"VITRINE_WEBHOOK_RETRY_BASE_S": "0.5"})
    active_model_version.threshold = 0.0
    active_model_version.save(update_fields=["threshold"])
    endpoint = WebhookEndpoint.objects.create(
        name="Storefront", url=receiver.url, events=list(WebhookEndpoint.Event.values)
    )
    receiver.answers = [500, 500]

    product = product_create(name="Linen shirt", sku="LS-1", price=Decimal("19.9"), image=photo_upload())

    wait_for(
        lambda: WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).count() == 2,
        timeout_s=60,
        what="both events to be delivered",
    )
    product.refresh_from_db()
    assert product.status == Product.Status.CLASSIFIED
    posts = receiver.posts()
    assert len(posts) == 4, "two refused attempts, then one answered delivery per event"
    for post in posts:
        timestamp = int(post.headers["X-Vitrine-Signature"].split(",")[0].removeprefix("t="))
        assert post.headers["X-Vitrine-Signature"] == webhook_signature(
            secret=endpoint.secret, timestamp=timestamp, body=post.body
        )
    by_event = {post.json()["type"]: post.json() for post in posts}
    assert by_event["product.classified"]["data"]["category"] == product.category.slug
    assert by_event["product.category_changed"]["data"]["previous_category"] is None
    assert Category.objects.filter(slug=by_event["product.classified"]["data"]["category"]).exists()
    deliveries = WebhookDelivery.objects.all()
    assert sorted(delivery.attempts for delivery in deliveries) in ([1, 3], [2, 2])
    # A retried delivery keeps its id, so a receiver can drop one it has already handled.
    assert {post.headers["X-Vitrine-Delivery"] for post in posts} == {str(d.delivery_id) for d in deliveries}
