"""classifier.tasks and the worker runtime, run in this process with a real tiny model.

Delivery itself (Redis, a worker process, redelivery after SIGKILL, retries) is tested in tests/e2e.
"""

import logging
import pathlib
from decimal import Decimal

import pytest
from django.core.files.storage import default_storage

from catalog.models import Product
from catalog.services.products import product_create
from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_activate, model_version_register
from classifier.tasks import classify_products, sweep_stuck_products
from classifier.workers import runtime
from config.celery_app import app as celery_app
from tests.e2e.support import BrokerQueues, photo_bytes

pytestmark = pytest.mark.django_db


def classify(product_ids: list[int]) -> None:
    """One delivery of classify_products, run in this process as a batch of its one message."""
    classify_products.apply(kwargs={"product_ids": product_ids}, throw=True)


@pytest.fixture
def product(make_upload) -> Product:
    upload = make_upload("shirt.png", content=photo_bytes(seed=1), image_format="PNG")
    return product_create(name="Shirt", sku="SH-1", price=Decimal("20"), image=upload)


def test_classify_files_the_product_with_the_active_model_version(
    product: Product, active_model_version: ModelVersion
) -> None:
    classify([product.pk])

    product.refresh_from_db()
    assert product.status in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)
    assert product.model_version == active_model_version
    assert product.suggested_category.name in active_model_version.class_names
    assert product.classified_sha256 == product.image_sha256


def test_classifying_the_same_photo_twice_applies_one_prediction(
    product: Product, active_model_version: ModelVersion, caplog, django_capture_on_commit_callbacks
) -> None:
    with caplog.at_level(logging.INFO), django_capture_on_commit_callbacks(execute=True):
        classify([product.pk])
        first = Product.objects.get(pk=product.pk)
        classify([product.pk])
    second = Product.objects.get(pk=product.pk)

    assert caplog.text.count(f"classification applied: product {product.pk} ") == 1
    assert "duplicate message skipped" in caplog.text
    assert (second.status, second.status_changed_at, second.confidence) == (
        first.status,
        first.status_changed_at,
        first.confidence,
    )


def test_an_unreadable_photo_fails_the_product_with_the_reason(
    product: Product, active_model_version: ModelVersion
) -> None:
    with default_storage.open(product.image.name, "wb") as stored:
        stored.write(b"this is not a picture")

    classify([product.pk])

    product.refresh_from_db()
    assert product.status == Product.Status.FAILED
    assert product.image.name in product.classification_error
    assert product.model_version is None


def test_a_photo_missing_from_storage_fails_the_product(
    product: Product, active_model_version: ModelVersion
) -> None:
    default_storage.delete(product.image.name)

    classify([product.pk])

    product.refresh_from_db()
    assert product.status == Product.Status.FAILED
    assert product.classification_error == f"{product.image.name}: image file is missing"


def test_without_an_active_model_the_product_keeps_waiting(
    product: Product, tiny_model: pathlib.Path
) -> None:
    classify([product.pk])

    product.refresh_from_db()
    assert product.status == Product.Status.PENDING

    model_version_register(artifact_dir=tiny_model, activate=True)
    classify([product.pk])

    product.refresh_from_db()
    assert product.status in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


def test_a_deleted_product_is_nothing_to_do(product: Product, active_model_version: ModelVersion) -> None:
    product_id = product.pk
    product.delete()

    classify([product_id])

    assert not Product.objects.filter(pk=product_id).exists()


def test_the_runtime_loads_a_version_once_and_switches_when_another_is_activated(
    active_model_version: ModelVersion, tiny_model: pathlib.Path
) -> None:
    version, classifier = runtime.active_classifier()
    _, same_classifier = runtime.active_classifier()
    newer = model_version_register(artifact_dir=tiny_model, name="newer")

    model_version_activate(model_version=newer)

    switched_version, switched_classifier = runtime.active_classifier()
    assert version == active_model_version
    assert same_classifier is classifier
    assert switched_version == newer
    assert switched_classifier is not classifier


def test_files_that_differ_from_the_registered_model_are_not_served(
    product: Product, active_model_version: ModelVersion, caplog
) -> None:
    ModelVersion.objects.filter(pk=active_model_version.pk).update(model_sha256="0" * 64)

    with caplog.at_level(logging.ERROR, logger="classifier.workers.runtime"):
        classify([product.pk])

    product.refresh_from_db()
    assert product.status == Product.Status.PENDING
    assert f"refusing model version {active_model_version.name}: " in caplog.text
    assert "is corrupt or was replaced" in caplog.text


def test_the_sweep_task_sends_stuck_products_again(product: Product, settings) -> None:
    settings.VITRINE_STUCK_AFTER_SECONDS = 0
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()

    assert sweep_stuck_products() == 1

    assert queues.length(settings.VITRINE_INFERENCE_QUEUE) == 1
    queues.clear()

    product.refresh_from_db()
    assert product.status == Product.Status.QUEUED


def test_tasks_go_to_the_queues_their_workers_listen_to(settings) -> None:
    def queue_of(task_name: str) -> str:
        return celery_app.amqp.router.route({}, task_name)["queue"].name

    assert queue_of("classifier.tasks.classify_products") == settings.VITRINE_INFERENCE_QUEUE
    assert queue_of("classifier.tasks.sweep_stuck_products") == settings.VITRINE_INFERENCE_QUEUE
    assert queue_of("classifier.tasks.train_model") == settings.VITRINE_TRAINING_QUEUE
