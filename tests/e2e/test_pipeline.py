"""Upload -> queue -> worker -> category, on PostgreSQL, Redis and real `celery worker` processes."""

import io
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction
from django.forms import FileField
from django.urls import reverse

from catalog.models import Category, Product
from catalog.services.products import product_create, product_update
from classifier.models import ModelVersion
from classifier.services.classification import classification_enqueue
from classifier.services.model_versions import model_version_activate, model_version_register
from config.celery_app import app as celery_app
from tests.e2e.slow_worker import pause_line, photos_line, slow_photos_env, slow_tasks_env
from tests.e2e.support import (
    BrokerQueues,
    CeleryWorker,
    Workers,
    broker_unreachable,
    photo_bytes,
    product_saved_without_queueing,
    product_status,
    wait_for,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DONE = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)
# A warm worker answers in well under a second; this only bounds a slow shared machine.
CLASSIFIED_WITHIN_S = 30


def wait_until_classified(product: Product) -> Product:
    wait_for(
        lambda: product_status(product.pk) in DONE,
        timeout_s=CLASSIFIED_WITHIN_S,
        what=f"product {product.pk} to be classified",
    )
    product.refresh_from_db()
    return product


def admin_add_form_data(client, url: str, fields: dict) -> dict:
    """What a browser posts from the add page: every field's shown value, the inline formsets' management
    forms and empty extra rows, with `fields` typed in on top."""
    page = client.get(url)
    assert page.status_code == 200
    forms = [page.context["adminform"].form]
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        forms += inline.formset.forms
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if value is not None and not isinstance(field, FileField):
                data[form.add_prefix(name)] = value
    return {**data, **fields}


@pytest.mark.parametrize(
    ("threshold", "expected_status"), [(0.0, Product.Status.CLASSIFIED), (1.0, Product.Status.NEEDS_REVIEW)]
)
def test_a_photo_saved_through_the_admin_add_form_is_classified_by_the_worker(
    admin_client,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    photo_upload,
    threshold: float,
    expected_status: str,
) -> None:
    active_model_version.threshold = threshold
    active_model_version.save(update_fields=["threshold"])
    url = reverse("admin:catalog_product_add")
    data = admin_add_form_data(
        admin_client,
        url,
        {
            "name": "Linen shirt",
            "sku": "LS-1",
            "price": "19.90",
            "description": "Loose fit",
            "is_published": "on",
            "image": photo_upload("linen-shirt.png"),
        },
    )

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["errors"]
    product = wait_until_classified(Product.objects.get(sku="LS-1"))
    assert product.status == expected_status
    assert product.model_version == active_model_version
    assert product.suggested_category.name in active_model_version.class_names
    assert 0.0 <= product.confidence <= 1.0
    if expected_status == Product.Status.CLASSIFIED:
        assert product.category == product.suggested_category
        assert product.category_source == Product.CategorySource.PREDICTED
    else:
        assert product.category is None
        assert product.category_source == Product.CategorySource.NONE


def test_a_product_saved_while_the_broker_is_down_is_kept_pending_and_classified_after_the_sweep(
    celery_worker: CeleryWorker, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    with broker_unreachable(celery_app):
        started = time.monotonic()
        product = product_create(name="Rain coat", sku="RC-1", price=Decimal("80"), image=photo_upload())
        save_s = time.monotonic() - started

    assert save_s < 3, f"saving took {save_s:.1f} s with the broker down"
    assert product_status(product.pk) == Product.Status.PENDING
    assert broker_queues.length("inference") == 0
    output = io.StringIO()
    call_command("sweep_stuck", "--older-than", "0", stdout=output)
    assert "1 stuck products sent to the queue again" in output.getvalue()
    product = wait_until_classified(product)
    assert product.model_version == active_model_version


def test_a_task_whose_worker_is_killed_mid_task_is_redelivered_and_applied_once(
    workers: Workers, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    workers.stop_all()
    slow_worker = workers.start(
        app="tests.e2e.slow_worker", extra_env=slow_tasks_env(classifier__tasks__classify_products=60)
    )
    product = product_create(name="Wool scarf", sku="WS-1", price=Decimal("25"), image=photo_upload())
    wait_for(
        lambda: (
            pause_line("classifier.tasks.classify_products", product_ids=[product.pk]) in slow_worker.log()
        ),
        timeout_s=CLASSIFIED_WITHIN_S,
        what="the slow worker to start the task",
    )

    slow_worker.kill()

    assert product_status(product.pk) == Product.Status.QUEUED
    # Delivered and unacknowledged: the message waits in Redis for its visibility timeout, not in the queue.
    assert broker_queues.length("inference") == 0
    workers.start()
    product = wait_until_classified(product)
    assert product.model_version == active_model_version
    assert workers.applied_count(product.pk) == 1


def test_a_photo_that_kills_its_worker_every_time_is_failed_at_the_delivery_limit(
    workers: Workers, active_model_version: ModelVersion, broker_queues: BrokerQueues, photo_upload
) -> None:
    workers.stop_all()
    limit = {"VITRINE_MAX_DELIVERIES": "2"}
    product = product_create(name="Heavy coat", sku="HC-1", price=Decimal("90"), image=photo_upload())
    for _death in range(2):
        dying = workers.start(app="tests.e2e.slow_worker", extra_env={**limit, **slow_photos_env(60)})
        wait_for(
            lambda worker=dying: photos_line([product.pk]) in worker.log(),
            timeout_s=CLASSIFIED_WITHIN_S,
            what="the worker to start on the photo",
        )
        dying.kill()
        # What the sweep does for a product queued too long (the killed delivery waits for its timeout).
        assert classification_enqueue(product_ids=[product.pk]) == 1

    workers.start(extra_env=limit)

    wait_for(
        lambda: product_status(product.pk) == Product.Status.FAILED,
        timeout_s=CLASSIFIED_WITHIN_S,
        what=f"product {product.pk} to be failed",
    )
    product.refresh_from_db()
    assert product.classification_error.startswith("The worker died 2 times on this photo")
    assert workers.applied_count(product.pk) == 0


def test_editing_name_and_price_sends_nothing_to_the_worker(
    workers: Workers,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    broker_queues: BrokerQueues,
    photo_upload,
) -> None:
    product = wait_until_classified(
        product_create(name="Denim jacket", sku="DJ-1", price=Decimal("60"), image=photo_upload())
    )
    received_before = workers.received_count()

    product_update(product=product, name="Denim jacket, washed", price=Decimal("55"))

    assert broker_queues.length("inference") == 0
    time.sleep(1.0)
    assert workers.received_count() == received_before
    edited = Product.objects.get(pk=product.pk)
    assert (edited.status, edited.status_changed_at, edited.confidence) == (
        product.status,
        product.status_changed_at,
        product.confidence,
    )
    assert edited.name == "Denim jacket, washed"


def test_a_persons_category_is_never_replaced_by_a_prediction(
    celery_worker: CeleryWorker, active_model_version: ModelVersion, photo_upload
) -> None:
    # Threshold 0: the model would file any product it may file.
    active_model_version.threshold = 0.0
    active_model_version.save(update_fields=["threshold"])
    gifts = Category.objects.create(name="Gifts", slug="gifts")
    product = product_create(
        name="Silk tie", sku="ST-1", price=Decimal("30"), image=photo_upload(seed=1), category=gifts
    )
    product = wait_until_classified(product)
    assert (product.category, product.category_source) == (gifts, Product.CategorySource.PERSON)
    assert product.suggested_category is not None

    product_update(product=product, image=photo_upload("new-photo.png", seed=2))

    product = wait_until_classified(product)
    assert (product.category, product.category_source) == (gifts, Product.CategorySource.PERSON)
    assert product.classified_sha256 == product.image_sha256


def test_an_unreadable_photo_fails_with_the_reason_and_is_not_retried(
    workers: Workers, celery_worker: CeleryWorker, active_model_version: ModelVersion
) -> None:
    product = product_saved_without_queueing(name="broken", image_bytes=photo_bytes()[:60])
    retries_before = workers.logs().count("Retry in")

    assert classification_enqueue(product_ids=[product.pk])

    wait_for(
        lambda: product_status(product.pk) == Product.Status.FAILED,
        timeout_s=CLASSIFIED_WITHIN_S,
        what="failure",
    )
    product.refresh_from_db()
    assert "broken" in product.classification_error
    assert product.model_version is None
    assert workers.logs().count("Retry in") == retries_before


def test_a_row_locked_by_another_transaction_is_retried_with_backoff_until_it_is_free(
    workers: Workers, celery_worker: CeleryWorker, active_model_version: ModelVersion
) -> None:
    product = product_saved_without_queueing(name="locked", image_bytes=photo_bytes(seed=3))
    retries_before = workers.logs().count("Retry in")

    with transaction.atomic():
        # Held like a long admin transaction; the worker's lock wait times out (lock_timeout 1 s).
        Product.objects.select_for_update().get(pk=product.pk)
        assert classification_enqueue(product_ids=[product.pk])
        wait_for(
            lambda: workers.logs().count("Retry in") > retries_before,
            timeout_s=CLASSIFIED_WITHIN_S,
            what="the worker to retry",
        )
        assert product_status(product.pk) == Product.Status.QUEUED

    product = wait_until_classified(product)
    assert workers.applied_count(product.pk) == 1


def test_a_newly_activated_model_version_is_served_without_restarting_the_worker(
    workers: Workers,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    tiny_model,
    photo_upload,
) -> None:
    first = wait_until_classified(
        product_create(name="Tank top", sku="TT-1", price=Decimal("9"), image=photo_upload(seed=4))
    )
    newer = model_version_register(artifact_dir=tiny_model, name="tiny-model-v2")

    model_version_activate(model_version=newer)

    second = wait_until_classified(
        product_create(name="Tank top 2", sku="TT-2", price=Decimal("9"), image=photo_upload(seed=5))
    )
    assert first.model_version == active_model_version
    assert second.model_version == newer
    assert "serving model version tiny-model-v2" in celery_worker.log()
    assert celery_worker.is_running()
