"""Every classification task ends: a product or bulk job whose work raises, or whose worker keeps dying, ends
failed with the reason, is not sent again by the sweeps, and a person can retry it (and cancel a bulk job).

In this process with a real tiny model; a worker really killed on a photo: tests/e2e/test_pipeline.py.
"""

import json
import threading
import time
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from celery_batches import SimpleRequest
from django.db import OperationalError
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Product
from catalog.services.classification import products_classification_start
from catalog.services.products import product_create
from classifier.models import BulkJob, ModelVersion, Prediction
from classifier.services.bulk import bulk_job_cancel, bulk_job_chunk_start, bulk_job_create, bulk_jobs_sweep
from classifier.services.classification import products_sweep_stuck
from classifier.tasks import RETRY_TRANSIENT_ERRORS, classify_products, classify_products_chunk
from classifier.workers import inference, runtime
from tests.e2e.support import BrokerQueues, photo_bytes
from tests.roles import caller_user

pytestmark = pytest.mark.django_db


def classify(product_ids: list[int]) -> None:
    """One delivery of classify_products, run in this process as a batch of its one message."""
    classify_products.apply(kwargs={"product_ids": product_ids}, throw=True)


@pytest.fixture
def products(make_upload) -> list[Product]:
    return [
        product_create(
            name=f"Shirt {seed}",
            sku=f"SH-{seed}",
            price=Decimal("20"),
            image=make_upload(f"shirt{seed}.png", content=photo_bytes(seed=seed), image_format="PNG"),
        )
        for seed in (1, 2, 3)
    ]


@pytest.fixture
def editor_api() -> APIClient:
    client = APIClient()
    client.force_authenticate(caller_user("catalog editor"))
    return client


@pytest.fixture
def model_raises(monkeypatch, active_model_version: ModelVersion):
    """Makes the served model raise `error` on every photo (as a photo that exhausts memory would)."""

    def raising(error: BaseException) -> None:
        _version, classifier = runtime.active_classifier()

        def predict_arrays(pixels: object) -> list:
            raise error

        monkeypatch.setattr(classifier, "predict_arrays", predict_arrays)

    return raising


def status_of(product: Product) -> tuple[str, str]:
    product.refresh_from_db()
    return product.status, product.classification_error


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        # No SoftTimeLimitExceeded: a batch task has no Celery time limit (VITRINE_INFERENCE_DEADLINE_S).
        (MemoryError(), "The worker ran out of memory."),
        (PermissionError(13, "Permission denied"), "PermissionError: [Errno 13] Permission denied"),
    ],
)
def test_a_photo_that_makes_the_worker_raise_fails_the_product_and_the_sweep_leaves_it(
    products, model_raises, error, shown, editor_api
):
    product = products[0]
    model_raises(error)

    with pytest.raises(type(error)):
        classify([product.pk])

    assert status_of(product) == (Product.Status.FAILED, shown)
    assert products_sweep_stuck(older_than_s=0) == 2, "the other two products only"
    assert status_of(product) == (Product.Status.FAILED, shown)
    answer = editor_api.get(reverse("catalog-api:product-classification", kwargs={"id_or_slug": product.pk}))
    assert (answer.json()["status"], answer.json()["error"]) == ("failed", shown)


@pytest.mark.parametrize("hung", ["model call", "photo read"])
def test_a_hung_inference_fails_its_product_at_the_deadline_and_the_next_one_is_classified(
    products, active_model_version, monkeypatch, settings, hung
):
    product, next_product = products[0], products[1]
    settings.VITRINE_INFERENCE_DEADLINE_S = 0.5
    released = threading.Event()
    if hung == "model call":
        _version, classifier = runtime.active_classifier()
        predict_arrays = classifier.predict_arrays
        monkeypatch.setattr(
            classifier, "predict_arrays", lambda pixels: released.wait() or predict_arrays(pixels)
        )
    else:
        read_photo = inference._read_photo
        monkeypatch.setattr(inference, "_read_photo", lambda product: released.wait() or read_photo(product))

    started = time.monotonic()
    with pytest.raises(inference.InferenceDeadlineExceeded):
        classify([product.pk])
    waited_s = time.monotonic() - started
    released.set()
    monkeypatch.undo()
    classify([next_product.pk])

    assert waited_s < 5
    assert status_of(product) == (
        Product.Status.FAILED,
        "InferenceDeadlineExceeded: Reading the photos and running the model took longer than 0.5 s "
        "(VITRINE_INFERENCE_DEADLINE_S); the worker left it and went on.",
    )
    assert status_of(next_product)[0] in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


def test_a_transient_error_does_not_fail_the_product_or_count_as_a_death(products, monkeypatch, settings):
    product = products[0]
    settings.VITRINE_MAX_DELIVERIES = 2
    monkeypatch.setattr(runtime, "active_classifier", lambda: (_ for _ in ()).throw(OperationalError("gone")))
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()

    for _delivery in range(settings.VITRINE_MAX_DELIVERIES + 2):
        classify([product.pk])

    product.refresh_from_db()
    assert (product.status, product.classification_attempts) == (Product.Status.PENDING, 0)
    # Each delivery sent the message again (after a jittered backoff) with one more retry in its headers.
    sent = [json.loads(raw) for raw in queues.client.lrange(settings.VITRINE_INFERENCE_QUEUE, 0, -1)]
    queues.clear()
    assert [message["headers"]["retries"] for message in sent] == [1] * (settings.VITRINE_MAX_DELIVERIES + 2)


def test_a_transient_error_past_the_retries_leaves_the_products_to_the_sweep(products, monkeypatch, settings):
    product = products[0]
    monkeypatch.setattr(runtime, "active_classifier", lambda: (_ for _ in ()).throw(OperationalError("gone")))
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    request = SimpleRequest(
        id="last-retry",
        name=classify_products.name,
        args=(),
        kwargs={"product_ids": [product.pk]},
        delivery_info={},
        hostname="here",
        ignore_result=True,
        reply_to=None,
        correlation_id=None,
        request_dict={"retries": RETRY_TRANSIENT_ERRORS["max_retries"]},
    )

    classify_products.run([request])

    assert queues.length(settings.VITRINE_INFERENCE_QUEUE) == 0
    assert status_of(product) == (Product.Status.PENDING, "")
    assert products_sweep_stuck(older_than_s=0) == 3


def test_a_photo_whose_worker_died_max_times_is_failed_instead_of_delivered_again(
    products, active_model_version, settings
):
    product, other = products[0], products[1]
    settings.VITRINE_MAX_DELIVERIES = 3
    # Three deliveries of the same message, each counted before its worker was killed (SIGKILL: nothing ran).
    for _death in range(3):
        assert products_classification_start(product_ids=[product.pk], max_attempts=3) == [product.pk]

    classify([product.pk])
    classify([other.pk])

    assert status_of(product) == (
        Product.Status.FAILED,
        "The worker died 3 times on this photo (out of memory or a crash); it is not sent again until "
        "someone classifies it again.",
    )
    assert not Prediction.objects.filter(product=product).exists()
    assert products_sweep_stuck(older_than_s=0) == 1, "the third product only"
    assert status_of(other)[0] in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


def test_deaths_before_a_delivery_that_ends_are_forgotten(products, active_model_version, settings):
    product = products[0]
    settings.VITRINE_MAX_DELIVERIES = 3
    for _death in range(2):
        products_classification_start(product_ids=[product.pk], max_attempts=3)

    classify([product.pk])

    product.refresh_from_db()
    assert product.status in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)
    assert product.classification_attempts == 0


def test_a_failed_product_is_retried_from_the_api(products, model_raises, editor_api, monkeypatch):
    product = products[0]
    model_raises(MemoryError())
    with pytest.raises(MemoryError):
        classify([product.pk])
    monkeypatch.undo()

    answer = editor_api.post(reverse("catalog-api:product-reclassify", kwargs={"id_or_slug": product.pk}))
    classify([product.pk])

    assert answer.status_code == 202
    assert (answer.json()["status"], answer.json()["error"]) == ("pending", "")
    assert status_of(product)[0] in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


@pytest.fixture
def job(products, active_model_version) -> BulkJob:
    return bulk_job_create(products=products, chunk_size=2)


def test_a_chunk_that_raises_fails_its_job_with_the_text_and_the_sweep_leaves_it(job, model_raises):
    model_raises(SoftTimeLimitExceeded())

    with pytest.raises(SoftTimeLimitExceeded):
        classify_products_chunk(job.pk, 0)

    job.refresh_from_db()
    assert (job.status, job.error, job.cursor) == (
        BulkJob.Status.FAILED,
        "At the products after id 0: Stopped at its time limit of 300 s.",
        0,
    )
    assert bulk_jobs_sweep(stale_after_s=0) == 0
    job.refresh_from_db()
    assert job.status == BulkJob.Status.FAILED


def test_a_chunk_whose_worker_died_max_times_fails_its_job(job, settings, django_capture_on_commit_callbacks):
    settings.VITRINE_MAX_DELIVERIES = 2
    classify_products_chunk(job.pk, 0)
    job.refresh_from_db()
    cursor = job.cursor
    for _death in range(2):
        assert bulk_job_chunk_start(job_id=job.pk, cursor=cursor, max_attempts=2) is not None

    with django_capture_on_commit_callbacks() as callbacks:
        classify_products_chunk(job.pk, cursor)

    job.refresh_from_db()
    assert job.status == BulkJob.Status.FAILED
    assert job.error == (
        f"The worker died 2 times on this chunk (the products after id {cursor}; out of memory or a crash). "
        "Resume the job to try it again."
    )
    assert (job.done, callbacks) == (2, [])
    assert bulk_jobs_sweep(stale_after_s=0) == 0


def test_a_job_cancelled_while_a_chunk_runs_sends_no_further_chunk(
    job, monkeypatch, django_capture_on_commit_callbacks
):
    record = inference.prediction_record

    def cancelled_meanwhile(**prediction: object) -> Product:
        # A person cancels while the chunk's predictions are being written.
        if BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.RUNNING).exists():
            bulk_job_cancel(job=job)
        return record(**prediction)

    monkeypatch.setattr(inference, "prediction_record", cancelled_meanwhile)

    with django_capture_on_commit_callbacks() as callbacks:
        classify_products_chunk(job.pk, 0)
        classify_products_chunk(job.pk, 0)

    job.refresh_from_db()
    sent_on = [callback for callback in callbacks if callback.func.__name__ == "bulk_job_enqueue"]
    assert (job.status, job.cursor, job.done, sent_on) == (BulkJob.Status.CANCELLED, 0, 0, [])
    assert bulk_jobs_sweep(stale_after_s=0) == 0
