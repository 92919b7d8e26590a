"""Classification on the classifier's side: sending products to the inference queue and recording what a
model version predicted. Filing the product from a prediction is the catalog's (catalog.services).

Keras-free: web processes import this module; the model runs in classifier.workers.inference.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import Product
from catalog.queues import task_send
from catalog.selectors import product_ids_waiting
from catalog.services.classification import product_file_from_prediction, products_mark_queued
from classifier.models import ModelVersion, Prediction
from classifier.services.dispatch import CLASSIFY_PRODUCTS
from classifier.services.model_versions import model_version_threshold
from classifier.services.similarity import product_duplicate_check_embedding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoPrediction:
    """A model's answer for one photo, as the worker hands it over (no TensorFlow types)."""

    label: str
    confidence: float
    top: list[tuple[str, float]]
    # Out-of-distribution score and verdict, for models that measure it.
    ood_score: float | None = None
    is_unfamiliar: bool = False
    # The photo's embedding as float16 bytes (classifier.services.similarity), for models that give one.
    embedding: bytes | None = None


def classification_enqueue(*, product_ids: list[int]) -> int:
    """Sends each product to the inference queue (a batch of one) and marks the sent ones queued.

    Returns how many were sent; without a broker the rest stay pending and the sweep sends them later.
    """
    sent = []
    for product_id in product_ids:
        if not task_send(
            CLASSIFY_PRODUCTS, unsent=f"product {product_id} stays pending", product_ids=[product_id]
        ):
            # The broker is down: the rest would fail the same way.
            break
        sent.append(product_id)
    products_mark_queued(product_ids=sent)
    return len(sent)


def on_product_photos_changed(sender: object, *, product_ids: list[int], **kwargs: object) -> None:
    """catalog.signals.product_photos_changed: the products want a classification (connected in apps.py)."""
    classification_enqueue(product_ids=product_ids)


@transaction.atomic
def prediction_record(
    *, product_id: int, image_sha256: str, prediction: PhotoPrediction, model_version: ModelVersion
) -> Product:
    """Keeps the prediction (once per photo and version) and has the catalog file the product from it."""
    Prediction.objects.get_or_create(
        product_id=product_id,
        model_version=model_version,
        image_sha256=image_sha256,
        defaults={
            "label": prediction.label,
            "confidence": prediction.confidence,
            "top": [[label, confidence] for label, confidence in prediction.top],
            "ood_score": prediction.ood_score,
            "is_unfamiliar": prediction.is_unfamiliar,
            "embedding": prediction.embedding,
        },
    )
    if prediction.embedding is not None:
        product_duplicate_check_embedding(
            product_id=product_id, model_version_id=model_version.pk, embedding=prediction.embedding
        )
    return product_file_from_prediction(
        product_id=product_id,
        image_sha256=image_sha256,
        label=prediction.label,
        confidence=prediction.confidence,
        model_version_id=model_version.pk,
        threshold=model_version_threshold(model_version=model_version, label=prediction.label)
        if model_version.files_automatically
        else None,
        unfamiliarity=prediction.ood_score,
        unfamiliar=prediction.is_unfamiliar,
    )


def products_sweep_stuck(*, older_than_s: int | None = None) -> int:
    """Sends again every product left pending or queued longer than the timeout; returns how many it sent."""
    if older_than_s is None:
        older_than_s = settings.VITRINE_STUCK_AFTER_SECONDS
    stuck_ids = product_ids_waiting(since_before=timezone.now() - timedelta(seconds=older_than_s))
    sent = classification_enqueue(product_ids=stuck_ids) if stuck_ids else 0
    if stuck_ids:
        logger.info("sweep: %s of %s stuck products sent to the queue again", sent, len(stuck_ids))
    return sent
