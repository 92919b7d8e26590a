"""Webhooks: a storefront is told when a product is classified or changes category, by signed POSTs.

An event becomes one WebhookDelivery row per subscribed endpoint, in the same transaction as the change it
tells of (no change, no event). After commit each is sent by the jobs worker (catalog.tasks); a delivery that
is not answered 2xx is tried again after VITRINE_WEBHOOK_RETRY_BASE_S, then three times as long each time,
until VITRINE_WEBHOOK_MAX_ATTEMPTS; the sweep sends those whose message was lost.

Signature (the header `X-Vitrine-Signature: t=<unix time>,v1=<hex>`): HMAC-SHA256 with the endpoint's secret
over "<t>.<the raw body>", as Stripe does; a receiver recomputes it and refuses an old `t` (replays).
"""

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import Category, Product, WebhookDelivery, WebhookEndpoint
from catalog.queues import task_send

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK = "catalog.tasks.deliver_webhook"
SIGNATURE_HEADER = "X-Vitrine-Signature"
# What a delivery's answer may take; a slow receiver fails this attempt and is tried again later.
TIMEOUT_S = 10
# Kept of a receiver's answer in last_error, enough to see why it refused.
ANSWER_EXCERPT = 300


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Vitrine-Signature header's value for this body, sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def product_event_data(product: Product) -> dict:
    """What a storefront needs to update its page for the product, without classification internals."""
    return {
        "id": product.pk,
        "sku": product.sku,
        "slug": product.slug,
        "status": product.status,
        "category": product.category.slug if product.category_id else None,
        "category_source": product.category_source,
    }


def product_events_record(*, product: Product, previous_category_id: int | None, classified: bool) -> None:
    """The product's events after a change saved in the caller's transaction: product.classified when a
    prediction was applied, product.category_changed when its category is not the one it had."""
    if classified:
        webhook_event_record(event=WebhookEndpoint.Event.PRODUCT_CLASSIFIED, data=product_event_data(product))
    if product.category_id != previous_category_id:
        webhook_event_record(
            event=WebhookEndpoint.Event.PRODUCT_CATEGORY_CHANGED,
            data={
                **product_event_data(product),
                "previous_category": (
                    Category.objects.filter(pk=previous_category_id).values_list("slug", flat=True).first()
                ),
            },
        )


def webhook_event_record(*, event: str, data: dict) -> int:
    """Records the event for every active endpoint subscribed to it (inside the caller's transaction) and
    sends the deliveries once it commits. Returns how many deliveries it made."""
    endpoints = [
        endpoint for endpoint in WebhookEndpoint.objects.filter(is_active=True) if event in endpoint.events
    ]
    if not endpoints:
        return 0
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event=event,
            payload={"type": event, "created_at": now.isoformat(), "data": data},
            next_attempt_at=now,
        )
        for endpoint in endpoints
    )
    delivery_ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: [webhook_delivery_send(delivery_id=pk) for pk in delivery_ids])
    return len(deliveries)


def webhook_delivery_send(*, delivery_id: int, countdown: float | None = None) -> bool:
    return task_send(
        DELIVER_WEBHOOK,
        unsent=f"webhook delivery {delivery_id} waits for the sweep",
        options={"countdown": countdown} if countdown is not None else None,
        delivery_id=delivery_id,
    )


def _retry_delay_s(attempts: int) -> float:
    return settings.VITRINE_WEBHOOK_RETRY_BASE_S * 3 ** (attempts - 1)


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """(HTTP status, "") when the receiver answered, else (status or None, why it failed)."""
    body = json.dumps({"id": str(delivery.delivery_id), **delivery.payload}, separators=(",", ":")).encode()
    request = urllib.request.Request(
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "vitrine-webhooks",
            "X-Vitrine-Event": delivery.event,
            "X-Vitrine-Delivery": str(delivery.delivery_id),
            SIGNATURE_HEADER: webhook_signature(
                secret=delivery.endpoint.secret, timestamp=int(time.time()), body=body
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as error:
        excerpt = error.read(ANSWER_EXCERPT).decode(errors="replace")
        return error.code, f"HTTP {error.code}: {excerpt}".strip()
    except (urllib.error.URLError, OSError, ValueError) as error:  # refused, timed out, bad URL
        return None, str(getattr(error, "reason", error)) or type(error).__name__


def webhook_delivery_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Sends the delivery if it is due (a second message for it finds it delivered or not yet due, and does
    nothing); records the answer and schedules the next attempt, or gives up at the last one."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(
                pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
            )
            .first()
        )
        if delivery is None:
            return None
        # Claimed: a second message for it finds the next attempt not due yet, and does nothing.
        delivery.attempts += 1
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=_retry_delay_s(delivery.attempts))
        delivery.save(update_fields=["attempts", "next_attempt_at"])
    status_code, problem = _post(delivery)
    delivery.last_status_code = status_code
    if status_code is not None and 200 <= status_code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.last_error = ""
    else:
        delivery.last_error = problem or f"HTTP {status_code}"
        if delivery.attempts >= settings.VITRINE_WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
    delivery.save(update_fields=["status", "delivered_at", "last_status_code", "last_error"])
    if delivery.status == WebhookDelivery.Status.PENDING:
        webhook_delivery_send(delivery_id=delivery.pk, countdown=_retry_delay_s(delivery.attempts))
    logger.log(
        logging.INFO if delivery.status == WebhookDelivery.Status.DELIVERED else logging.WARNING,
        "webhook %s to %s: attempt %s, %s",
        delivery.event,
        delivery.endpoint.url,
        delivery.attempts,
        delivery.status if not delivery.last_error else f"{delivery.status} ({delivery.last_error})",
    )
    return delivery


def webhook_deliveries_sweep(*, late_after_s: float = 60) -> int:
    """Sends again the pending deliveries due for more than `late_after_s` (their message was lost)."""
    late = timezone.now() - timedelta(seconds=late_after_s)
    delivery_ids = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=late
        ).values_list("pk", flat=True)[:1000]
    )
    for delivery_id in delivery_ids:
        webhook_delivery_send(delivery_id=delivery_id)
    return len(delivery_ids)


def webhook_deliveries_send_again(*, deliveries: list[WebhookDelivery]) -> int:
    """A person sends failed (or still pending) deliveries again now, with a fresh count of attempts."""
    delivery_ids = [
        delivery.pk for delivery in deliveries if delivery.status != WebhookDelivery.Status.DELIVERED
    ]
    WebhookDelivery.objects.filter(pk__in=delivery_ids).update(
        status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    transaction.on_commit(lambda: [webhook_delivery_send(delivery_id=pk) for pk in delivery_ids])
    return len(delivery_ids)
