"""Classifying products in the inference worker: one path for one product or many (loads TensorFlow).

Photos are read and the model runs outside any transaction; each result is then written in its own short
transaction through classifier.services.classification (which hands the filing to the catalog).

Each delivery is counted on the products' (or the bulk job's) row before the work starts and released when
it ends: a count that keeps growing is a photo or chunk that kills its worker, failed at
VITRINE_MAX_DELIVERIES instead of delivered again.

The solo pool enforces no task time limit, so reading the photos and running the model have a deadline of
their own (VITRINE_INFERENCE_DEADLINE_S): they run in a helper thread the task waits for that long. A timer
signal would not do: Python runs a signal handler only between bytecodes of the main thread, never while it
waits inside a TensorFlow call. Nothing can stop a hung call from outside, so its thread is left behind
(a daemon, holding no database connection) and the task fails its products; the worker goes on.

Batches: the worker hands over every message it holds (classifier.tasks, celery-batches), and the photos of
first deliveries are classified together, in one forward pass. A message delivered again (its worker died
holding it) is classified alone, and only a delivery alone is counted, so a photo that kills its worker takes
no batch-mate to the delivery limit.
Photos are decoded and resized in a thread pool, one thread per core this process owns (Pillow releases the
GIL while it decodes and resizes), so decoding a batch takes the time of its share per core, not the sum.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from django.conf import settings

from catalog.models import Product
from catalog.selectors import products_classification_attempts
from catalog.services.classification import (
    product_classification_fail,
    products_classification_release,
    products_classification_start,
)
from classifier.ml.preprocess import ImageError, open_image, to_array
from classifier.services.bulk import (
    bulk_job_chunk_finish,
    bulk_job_chunk_release,
    bulk_job_chunk_start,
    bulk_job_fail,
)
from classifier.services.classification import PhotoPrediction, prediction_record
from classifier.workers import runtime

logger = logging.getLogger(__name__)
T = TypeVar("T")

_decoders: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class BatchOutcome:
    classified: int = 0
    failed: int = 0
    # No version could be served: these products stay queued for the sweep.
    waiting: int = 0


class InferenceDeadlineExceeded(Exception):
    """Reading the photos or running the model hung past VITRINE_INFERENCE_DEADLINE_S."""


def _within_deadline(work: Callable[[], T], *, deadline_s: float) -> T:
    """work()'s result, or InferenceDeadlineExceeded when it has not returned within deadline_s."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # handed over to the waiting task, which raises it
            outcome["error"] = error

    helper = threading.Thread(target=run, name="inference", daemon=True)
    helper.start()
    helper.join(timeout=deadline_s)
    if helper.is_alive():
        raise InferenceDeadlineExceeded(
            f"Reading the photos and running the model took longer than {deadline_s:g} s "
            "(VITRINE_INFERENCE_DEADLINE_S); the worker left it and went on."
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _read_photo(product: Product) -> tuple[object | None, str | None]:
    """(the decoded photo, None), or (None, why it cannot be classified)."""
    try:
        with product.image.open("rb") as image_file:
            return open_image(image_file.read(), name=product.image.name), None
    except FileNotFoundError:
        return None, f"{product.image.name}: image file is missing"
    except ImageError as error:
        return None, str(error)


def _decoder_pool() -> ThreadPoolExecutor:
    global _decoders
    if _decoders is None:
        _decoders = ThreadPoolExecutor(
            max_workers=len(os.sched_getaffinity(0)), thread_name_prefix="photo-decode"
        )
    return _decoders


@dataclass(frozen=True)
class Delivery:
    """One message's products, and whether the broker delivered it before (its holder died)."""

    product_ids: list[int]
    redelivered: bool = False


def deliveries_classify(*, deliveries: list[Delivery]) -> BatchOutcome:
    """The messages a worker holds: first deliveries in one batch, each message delivered again on its own.

    Only a message's own batch counts as a delivery of its products: a worker that dies on a batch of several
    has every message of it delivered again, each alone, where a photo that kills its worker is counted.
    """
    first = [delivery.product_ids for delivery in deliveries if not delivery.redelivered]
    again = [delivery.product_ids for delivery in deliveries if delivery.redelivered]
    attempts = products_classification_attempts(
        product_ids=[pk for product_ids in again for pk in product_ids]
    )
    # A photo that already killed a worker alone goes last: it would take the messages after it down again.
    again.sort(key=lambda product_ids: max((attempts.get(pk, 0) for pk in product_ids), default=0))
    batches = ([first] if first else []) + [[product_ids] for product_ids in again]
    logger.info(
        "classifying %s message(s) in %s batch(es): products %s",
        len(deliveries),
        len(batches),
        [product_id for delivery in deliveries for product_id in delivery.product_ids],
    )
    outcomes = [
        products_classify_delivered(
            product_ids=[product_id for product_ids in messages for product_id in product_ids],
            counted=len(messages) == 1,
        )
        for messages in batches
    ]
    return BatchOutcome(
        classified=sum(outcome.classified for outcome in outcomes),
        failed=sum(outcome.failed for outcome in outcomes),
        waiting=sum(outcome.waiting for outcome in outcomes),
    )


def products_classify_delivered(*, product_ids: list[int], counted: bool = True) -> BatchOutcome:
    """One delivery of the products' classification: the ones still waiting for it, counted while it runs
    (unless not `counted`: see deliveries_classify)."""
    product_ids = products_classification_start(
        product_ids=product_ids, max_attempts=settings.VITRINE_MAX_DELIVERIES, counted=counted
    )
    try:
        return products_classify(product_ids=product_ids)
    finally:
        if counted:
            products_classification_release(product_ids=product_ids)


def products_classify(*, product_ids: list[int]) -> BatchOutcome:
    """Classifies the products' photos in one batch with the active model version.

    A product gone is skipped. Without a servable version nothing is written and the products wait for the
    sweep.
    """
    products = list(Product.objects.filter(pk__in=product_ids).order_by("pk"))
    if len(products) < len(set(product_ids)):
        gone = sorted(set(product_ids) - {product.pk for product in products})
        logger.info("products %s no longer exist; nothing to classify", gone)
    if not products:
        return BatchOutcome()
    served = runtime.active_classifier()
    if served is None:
        logger.warning("products %s wait: no model version can be served", [p.pk for p in products])
        return BatchOutcome(waiting=len(products))
    model_version, classifier = served

    def photo_pixels(product: Product) -> tuple[np.ndarray | None, str | None]:
        image, problem = _read_photo(product)
        if problem is not None:
            return None, problem
        return to_array(image, input_shape=classifier.input_shape, style=classifier.style), None

    def look_at_photos() -> tuple[list[tuple[Product, str]], list[Product], list]:
        # No database here: this may run on in a thread the task has given up on.
        started = time.perf_counter()
        unreadable, readable, pixels = [], [], []
        for product, (array, problem) in zip(
            products, _decoder_pool().map(photo_pixels, products), strict=True
        ):
            if problem is None:
                readable.append(product)
                pixels.append(array)
            else:
                unreadable.append((product, problem))
        if not pixels:
            return unreadable, readable, []
        decoded = time.perf_counter()
        predictions = classifier.predict_arrays(np.stack(pixels))
        logger.info(
            "classified %s photo(s) in one forward pass: decoding %.0f ms, model %.0f ms",
            len(pixels),
            (decoded - started) * 1000,
            (time.perf_counter() - decoded) * 1000,
        )
        return unreadable, readable, predictions

    unreadable, readable, predictions = _within_deadline(
        look_at_photos, deadline_s=settings.VITRINE_INFERENCE_DEADLINE_S
    )
    for product, problem in unreadable:
        product_classification_fail(product_id=product.pk, error=problem, image_sha256=product.image_sha256)
    for product, prediction in zip(readable, predictions, strict=True):
        prediction_record(
            product_id=product.pk,
            image_sha256=product.image_sha256,
            prediction=PhotoPrediction(
                label=prediction.label,
                confidence=prediction.confidence,
                top=prediction.top,
                ood_score=prediction.ood_score,
                is_unfamiliar=prediction.is_unfamiliar,
                embedding=None if prediction.embedding is None else prediction.embedding.tobytes(),
            ),
            model_version=model_version,
        )
    return BatchOutcome(classified=len(readable), failed=len(unreadable))


def bulk_job_chunk_classify(*, job_id: int, cursor: int) -> None:
    """One chunk of a bulk re-classification: claim it, classify it, move the job's cursor on."""
    product_ids = bulk_job_chunk_start(
        job_id=job_id, cursor=cursor, max_attempts=settings.VITRINE_MAX_DELIVERIES
    )
    if product_ids is None:
        return
    try:
        if product_ids and runtime.active_classifier() is None:
            bulk_job_fail(
                job_id=job_id, error="No model version is active any more; activate one and resume the job."
            )
            return
        outcome = products_classify(product_ids=product_ids)
        bulk_job_chunk_finish(job_id=job_id, cursor=cursor, product_ids=product_ids, failed=outcome.failed)
    finally:
        bulk_job_chunk_release(job_id=job_id, cursor=cursor)
