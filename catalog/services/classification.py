"""A product's classification state, written only here: queued, in progress, filed from a prediction under
the catalog's rules (threshold, unfamiliar photo, a model not validated on photos, a retired category, a
person wins), or failed. The classifier predicts and hands each prediction to product_file_from_prediction().
"""

import logging
from functools import partial

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog.models import DONE_STATUSES, WAITING_STATUSES, Product
from catalog.services.categories import category_for_prediction
from catalog.services.webhooks import product_events_record

logger = logging.getLogger(__name__)


def _log_after_commit(message: str, *args: object) -> None:
    transaction.on_commit(partial(logger.info, message, *args), robust=True)


# The fields a prediction writes: cleared when the photo changes, since they describe the old one.
PREDICTION_FIELDS = (
    "suggested_category",
    "confidence",
    "unfamiliarity",
    "review_reason",
    "model_version",
    "classified_sha256",
)


def products_mark_queued(*, product_ids: list[int]) -> int:
    """Pending products whose classification was sent to a queue; a finished one is never turned back."""
    now = timezone.now()
    return Product.objects.filter(pk__in=product_ids, status__in=WAITING_STATUSES).update(
        status=Product.Status.QUEUED, status_changed_at=now, updated_at=now
    )


@transaction.atomic
def products_classification_start(
    *, product_ids: list[int], max_attempts: int, counted: bool = True
) -> list[int]:
    """Counts one more delivery of the products' classification (unless not `counted`); returns the ids to
    classify now.

    Only products waiting for a classification are classified: one that has it, or that failed, is a
    duplicate message's (a failed one waits for a person's "Classify again"). A product whose last
    `max_attempts` counted deliveries never ended (each killed its worker) is failed instead of run again.
    """
    products = Product.objects.select_for_update().filter(pk__in=product_ids).order_by("pk")
    to_classify = []
    for product in products:
        if product.status not in WAITING_STATUSES:
            logger.info("product %s is %s; duplicate message skipped", product.pk, product.status)
        elif product.classification_attempts >= max_attempts:
            _classification_failed(
                product,
                error=f"The worker died {product.classification_attempts} times on this photo (out of memory "
                "or a crash); it is not sent again until someone classifies it again.",
            )
        else:
            if counted:
                product.classification_attempts += 1
                product.save(update_fields=["classification_attempts", "updated_at"])
            to_classify.append(product.pk)
    return to_classify


def products_classification_release(*, product_ids: list[int]) -> int:
    """The delivery of these products' classification ended without killing its worker: it counts no more
    (a product still waiting, say for a model version, is sent again by the sweep)."""
    return Product.objects.filter(
        pk__in=product_ids, status__in=WAITING_STATUSES, classification_attempts__gt=0
    ).update(classification_attempts=F("classification_attempts") - 1)


def _review_reason(product: Product, *, threshold: float | None, unfamiliar: bool) -> Product.ReviewReason:
    """Why this prediction may not file the product by itself; NONE when it may."""
    if threshold is None:
        return Product.ReviewReason.NOT_VALIDATED
    if unfamiliar:
        return Product.ReviewReason.UNFAMILIAR
    if not product.suggested_category.is_active:
        return Product.ReviewReason.RETIRED_CATEGORY
    if product.confidence < threshold:
        return Product.ReviewReason.LOW_CONFIDENCE
    return Product.ReviewReason.NONE


@transaction.atomic
def product_file_from_prediction(
    *,
    product_id: int,
    image_sha256: str,
    label: str,
    confidence: float,
    model_version_id: int,
    threshold: float | None,
    unfamiliarity: float | None = None,
    unfamiliar: bool = False,
) -> Product:
    """Files the product from a prediction for the photo with hash `image_sha256`; twice changes nothing.

    The catalog's rules: a person's category is never replaced; a prediction files the product only when its
    model may file by itself (`threshold` None: never), the photo is like the ones the model learned from
    (not `unfamiliar`), the category is active and `confidence` reaches `threshold`. Otherwise the suggestion
    waits for review with the reason. A prediction for a photo since replaced is ignored.
    """
    product = Product.objects.select_for_update().get(pk=product_id)
    if product.image_sha256 != image_sha256:
        logger.info("product %s: prediction ignored, made for a photo since replaced", product_id)
        return product
    already_applied = (
        product.status in DONE_STATUSES
        and product.classified_sha256 == image_sha256
        and product.model_version_id == model_version_id
    )
    if already_applied:
        return product
    previous_category_id = product.category_id
    product.suggested_category = category_for_prediction(label=label)
    product.confidence = confidence
    product.unfamiliarity = unfamiliarity
    product.model_version_id = model_version_id
    product.classified_sha256 = image_sha256
    product.classification_error = ""
    product.classification_attempts = 0
    product.status_changed_at = timezone.now()
    reason = _review_reason(product, threshold=threshold, unfamiliar=unfamiliar)
    if product.category_source == Product.CategorySource.PERSON:
        product.status, product.review_reason = Product.Status.CLASSIFIED, Product.ReviewReason.NONE
    elif reason == Product.ReviewReason.NONE:
        product.category = product.suggested_category
        product.category_source = Product.CategorySource.PREDICTED
        product.status, product.review_reason = Product.Status.CLASSIFIED, reason
    else:
        # A machine's earlier filing is withdrawn when the current model may not file; a person decides.
        if product.category_source == Product.CategorySource.PREDICTED:
            product.category = None
            product.category_source = Product.CategorySource.NONE
        product.status, product.review_reason = Product.Status.NEEDS_REVIEW, reason
    # Only the prediction's own columns: a person's edit of other fields is never written back over.
    product.save(
        update_fields=[
            *PREDICTION_FIELDS,
            "classification_error",
            "classification_attempts",
            "status",
            "status_changed_at",
            "category",
            "category_source",
            "updated_at",
        ]
    )
    product_events_record(product=product, previous_category_id=previous_category_id, classified=True)
    # Said once it is true: a worker killed before the commit has applied nothing.
    _log_after_commit(
        "classification applied: product %s -> %s (%.3f, %s%s) by model version id %s",
        product_id,
        label,
        confidence,
        product.status,
        f": {product.get_review_reason_display()}" if product.review_reason else "",
        model_version_id,
    )
    return product


@transaction.atomic
def product_classification_fail(*, product_id: int, error: str, image_sha256: str | None = None) -> Product:
    """Marks the product failed with a readable reason.

    Given `image_sha256`, only while that is still the product's photo: a failure for an old photo is ignored.
    """
    product = Product.objects.select_for_update().get(pk=product_id)
    if image_sha256 is not None and product.image_sha256 != image_sha256:
        logger.info("product %s: failure ignored, it was for a photo since replaced", product_id)
        return product
    _classification_failed(product, error=error)
    return product


def _classification_failed(product: Product, *, error: str) -> None:
    product.status = Product.Status.FAILED
    product.classification_error = error
    product.classification_attempts = 0
    product.status_changed_at = timezone.now()
    product.save(
        update_fields=[
            "status",
            "classification_error",
            "classification_attempts",
            "status_changed_at",
            "updated_at",
        ]
    )
    logger.warning("classification failed: product %s: %s", product.pk, error)


@transaction.atomic
def products_classification_fail(*, product_ids: list[int], error: str) -> int:
    """Fails those of the products still waiting for their classification (its task raised `error`); the
    others were filed or failed before it raised. Returns how many it failed."""
    products = Product.objects.select_for_update().filter(pk__in=product_ids, status__in=WAITING_STATUSES)
    failed = 0
    for product in products.order_by("pk"):
        _classification_failed(product, error=error)
        failed += 1
    return failed
