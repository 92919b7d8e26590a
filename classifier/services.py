"""Writes of the classifier: sending products to the queue, applying predictions, registering model versions.

Imported by web processes too, so TensorFlow is only reached inside product_classify (workers).
"""

import logging
import pathlib
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import Product
from catalog.services import CategoryLabelError, category_for_label
from classifier.models import ModelVersion

logger = logging.getLogger(__name__)

WAITING_STATUSES = (Product.Status.PENDING, Product.Status.QUEUED)
DONE_STATUSES = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


class ModelVersionError(ValueError):
    """A model directory that cannot become a model version (missing, unreadable, name already taken)."""


def classification_enqueue(*, product_id: int) -> bool:
    """Sends the product to the inference queue and marks it queued; False (left pending) without a broker.

    Never raises: a product whose message could not be sent stays pending and the sweep sends it later.
    """
    # tasks imports this module, so the task is looked up when first sent.
    from classifier.tasks import classify_product

    try:
        classify_product.apply_async(kwargs={"product_id": product_id})
    except Exception as error:  # Any failure to publish means the same thing: the sweep must send it later.
        logger.warning("product %s stays pending: cannot reach the broker (%s)", product_id, error)
        return False
    now = timezone.now()
    # A fast worker may already have classified it; a finished status is never turned back into queued.
    Product.objects.filter(pk=product_id, status__in=WAITING_STATUSES).update(
        status=Product.Status.QUEUED, status_changed_at=now, updated_at=now
    )
    return True


def model_version_threshold(*, model_version: ModelVersion) -> float:
    """The confidence at or above which this version files products by itself."""
    if model_version.threshold is not None:
        return model_version.threshold
    return settings.VITRINE_CONFIDENCE_THRESHOLD


@transaction.atomic
def prediction_apply(
    *, product_id: int, image_sha256: str, label: str, confidence: float, model_version: ModelVersion
) -> Product:
    """Records a prediction made for the photo with hash `image_sha256`; running it twice changes nothing.

    The category is filed automatically only at or above the version's threshold and never over a person's
    choice; below it the suggestion waits for review. A prediction for a photo since replaced is ignored.
    """
    product = Product.objects.select_for_update().get(pk=product_id)
    if product.image_sha256 != image_sha256:
        logger.info("product %s: prediction ignored, made for a photo since replaced", product_id)
        return product
    already_applied = (
        product.status in DONE_STATUSES
        and product.classified_sha256 == image_sha256
        and product.model_version_id == model_version.pk
    )
    if already_applied:
        return product
    suggestion = category_for_label(label=label)
    now = timezone.now()
    product.suggested_category = suggestion
    product.confidence = confidence
    product.model_version = model_version
    product.classified_sha256 = image_sha256
    product.classification_error = ""
    product.status_changed_at = now
    sure = confidence >= model_version_threshold(model_version=model_version)
    if product.category_source == Product.CategorySource.PERSON:
        product.status = Product.Status.CLASSIFIED
    elif sure:
        product.category = suggestion
        product.category_source = Product.CategorySource.PREDICTED
        product.status = Product.Status.CLASSIFIED
    else:
        # A machine's earlier filing is withdrawn when the current model is not sure; a person decides.
        if product.category_source == Product.CategorySource.PREDICTED:
            product.category = None
            product.category_source = Product.CategorySource.NONE
        product.status = Product.Status.NEEDS_REVIEW
    # Only the prediction's own columns: a person's edit of other fields is never written back over.
    product.save(
        update_fields=[
            "suggested_category",
            "confidence",
            "model_version",
            "classified_sha256",
            "classification_error",
            "status",
            "status_changed_at",
            "category",
            "category_source",
            "updated_at",
        ]
    )
    logger.info(
        "classification applied: product %s -> %s (%.3f, %s) by model version %s",
        product_id,
        label,
        confidence,
        product.status,
        model_version.name,
    )
    return product


@transaction.atomic
def classification_fail(*, product_id: int, error: str, image_sha256: str | None = None) -> Product:
    """Marks the product failed with a readable reason.

    Given `image_sha256`, only while that is still the product's photo: a failure for an old photo is ignored.
    """
    product = Product.objects.select_for_update().get(pk=product_id)
    if image_sha256 is not None and product.image_sha256 != image_sha256:
        logger.info("product %s: failure ignored, it was for a photo since replaced", product_id)
        return product
    product.status = Product.Status.FAILED
    product.classification_error = error
    product.status_changed_at = timezone.now()
    product.save(update_fields=["status", "classification_error", "status_changed_at", "updated_at"])
    logger.warning("classification failed: product %s: %s", product_id, error)
    return product


def product_classify(*, product_id: int) -> Product | None:
    """Classifies the product's photo with the active model version (worker side; loads TensorFlow).

    Returns None when there is nothing to do now: the product is gone, or no model version is active
    (it stays queued and the sweep sends it again). A photo already classified is not classified again.
    """
    from classifier import runtime
    from classifier.ml.preprocess import ImageError, open_image

    product = Product.objects.filter(pk=product_id).first()
    if product is None:
        logger.info("product %s no longer exists; nothing to classify", product_id)
        return None
    if product.status in DONE_STATUSES and product.classified_sha256 == product.image_sha256:
        logger.info("product %s: this photo is already classified; duplicate message skipped", product_id)
        return product
    served = runtime.active_classifier()
    if served is None:
        logger.warning("product %s waits: no model version is active", product_id)
        return None
    model_version, classifier = served
    image_sha256 = product.image_sha256
    try:
        with product.image.open("rb") as image_file:
            image = open_image(image_file.read(), name=product.image.name)
    except FileNotFoundError:
        return classification_fail(
            product_id=product_id,
            error=f"{product.image.name}: image file is missing",
            image_sha256=image_sha256,
        )
    except ImageError as error:
        return classification_fail(product_id=product_id, error=str(error), image_sha256=image_sha256)
    prediction = classifier.predict_images([image])[0]
    return prediction_apply(
        product_id=product_id,
        image_sha256=image_sha256,
        label=prediction.label,
        confidence=prediction.confidence,
        model_version=model_version,
    )


def products_sweep_stuck(*, older_than_s: int | None = None) -> int:
    """Sends again every product left pending or queued longer than the timeout; returns how many it sent."""
    if older_than_s is None:
        older_than_s = settings.VITRINE_STUCK_AFTER_SECONDS
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    stuck_ids = list(
        Product.objects.filter(status__in=WAITING_STATUSES, status_changed_at__lt=cutoff)
        .order_by("status_changed_at")
        .values_list("pk", flat=True)
    )
    sent = 0
    for product_id in stuck_ids:
        if not classification_enqueue(product_id=product_id):
            # The broker is down: the rest would fail the same way; the next sweep tries again.
            break
        sent += 1
    if stuck_ids:
        logger.info("sweep: %s of %s stuck products sent to the queue again", sent, len(stuck_ids))
    return sent


def model_version_artifact_dir(*, model_version: ModelVersion) -> pathlib.Path:
    """The artifact directory on disk; relative paths are under VITRINE_MODELS_DIR."""
    return pathlib.Path(settings.VITRINE_MODELS_DIR) / model_version.artifact_path


def model_version_register(
    *, artifact_dir: pathlib.Path, name: str | None = None, activate: bool = False
) -> ModelVersion:
    """Records a trained artifact directory (classifier.ml.artifact) as a model version, optionally active."""
    from classifier.ml.artifact import MODEL_FILE, ArtifactError, read_metadata

    artifact_dir = pathlib.Path(artifact_dir).resolve()
    try:
        metadata = read_metadata(artifact_dir)
    except ArtifactError as error:
        raise ModelVersionError(str(error)) from None
    if not (artifact_dir / MODEL_FILE).is_file():
        raise ModelVersionError(f"{artifact_dir}: {MODEL_FILE} is missing")
    name = name or artifact_dir.name
    if ModelVersion.objects.filter(name=name).exists():
        raise ModelVersionError(f"a model version named {name!r} already exists")
    models_dir = pathlib.Path(settings.VITRINE_MODELS_DIR).resolve()
    stored_path = (
        artifact_dir.relative_to(models_dir) if artifact_dir.is_relative_to(models_dir) else artifact_dir
    )
    with transaction.atomic():
        model_version = ModelVersion.objects.create(
            name=name,
            artifact_path=str(stored_path),
            model_sha256=metadata["model_sha256"],
            architecture=metadata["architecture"],
            class_names=list(metadata["class_names"]),
            metrics=metadata.get("metrics", {}),
            data_fingerprint=metadata.get("data", {}).get("fingerprint", ""),
            threshold=settings.VITRINE_CONFIDENCE_THRESHOLD,
        )
        if activate:
            model_version = model_version_activate(model_version=model_version)
    return model_version


@transaction.atomic
def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Makes this the one version workers serve (they switch at their next task); creates its categories."""
    # Locking every version serialises two activations at once; the constraint allows one active row.
    list(ModelVersion.objects.select_for_update().all())
    try:
        for label in model_version.class_names:
            category_for_label(label=label)
    except CategoryLabelError as error:
        raise ModelVersionError(f"model version {model_version.name}: {error}") from None
    ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
    model_version.is_active = True
    model_version.activated_at = timezone.now()
    model_version.save(update_fields=["is_active", "activated_at"])
    logger.info("model version %s is now active", model_version.name)
    return model_version


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()
