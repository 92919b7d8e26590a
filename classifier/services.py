"""Writes of the classifier: sending products to the queue, applying predictions, registering model versions.

Imported by web processes too, so TensorFlow is only reached inside product_classify (workers).
"""

import bisect
import hashlib
import json
import logging
import pathlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import connections, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.text import slugify

from catalog.models import Category, Product
from catalog.services import CategoryLabelError, category_for_label, category_for_prediction
from classifier.models import BulkJob, ModelActivation, ModelVersion, TrainingRun
from classifier.selectors import (
    base_dataset_choices,
    model_version_active,
    model_version_roll_back_target,
    training_run_busy,
)

# Re-exported: workers (classifier.runtime) find the served version's files through this module.
from classifier.selectors import model_version_artifact_dir as model_version_artifact_dir

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
    suggestion = category_for_prediction(label=label)
    now = timezone.now()
    product.suggested_category = suggestion
    product.confidence = confidence
    product.model_version = model_version
    product.classified_sha256 = image_sha256
    product.classification_error = ""
    product.status_changed_at = now
    # A retired category never receives a product by itself: its predictions wait for a person.
    sure = suggestion.is_active and confidence >= model_version_threshold(model_version=model_version)
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


def _product_photo(product: Product) -> tuple[object | None, str | None]:
    """(the decoded photo, None), or (None, why it cannot be classified) (worker side)."""
    from classifier.ml.preprocess import ImageError, open_image

    try:
        with product.image.open("rb") as image_file:
            return open_image(image_file.read(), name=product.image.name), None
    except FileNotFoundError:
        return None, f"{product.image.name}: image file is missing"
    except ImageError as error:
        return None, str(error)


def product_classify(*, product_id: int) -> Product | None:
    """Classifies the product's photo with the active model version (worker side; loads TensorFlow).

    Returns None when there is nothing to do now: the product is gone, or no model version is active
    (it stays queued and the sweep sends it again). A photo already classified is not classified again.
    """
    from classifier import runtime

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
    image, problem = _product_photo(product)
    if problem is not None:
        return classification_fail(product_id=product_id, error=problem, image_sha256=image_sha256)
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


def _activate(
    *, model_version: ModelVersion, activated_by: AbstractBaseUser | None, is_roll_back: bool
) -> ModelVersion:
    # Locking every version serialises two activations at once; the constraint allows one active row.
    list(ModelVersion.objects.select_for_update().all())
    try:
        for label in model_version.class_names:
            category_for_label(label=label)
    except CategoryLabelError as error:
        raise ModelVersionError(f"model version {model_version.name}: {error}") from None
    previous = ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).first()
    was_active = ModelVersion.objects.filter(pk=model_version.pk, is_active=True).exists()
    ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
    model_version.is_active = True
    model_version.activated_at = timezone.now()
    model_version.save(update_fields=["is_active", "activated_at"])
    if not was_active:
        ModelActivation.objects.create(
            model_version=model_version,
            previous=previous,
            is_roll_back=is_roll_back,
            activated_by=activated_by,
        )
    logger.info("model version %s is now active%s", model_version.name, " (roll back)" * is_roll_back)
    return model_version


@transaction.atomic
def model_version_activate(
    *, model_version: ModelVersion, activated_by: AbstractBaseUser | None = None
) -> ModelVersion:
    """Makes this the one version workers serve (they switch at their next task); creates its categories.

    Each switch is recorded (ModelActivation), which is what model_version_roll_back() goes back along.
    """
    return _activate(model_version=model_version, activated_by=activated_by, is_roll_back=False)


@transaction.atomic
def model_version_roll_back(*, activated_by: AbstractBaseUser | None = None) -> ModelVersion:
    """Activates again the version that was active before the current one, the same atomic way."""
    list(ModelVersion.objects.select_for_update().all())
    target = model_version_roll_back_target()
    if target is None:
        raise ModelVersionError("nothing to roll back to: no other version was active before the current one")
    return _activate(model_version=target, activated_by=activated_by, is_roll_back=True)


# Training from the catalog: the admin's "Retrain now" -> TrainingRun -> the training queue -> a new version.

RECIPE_KEYS = ("architecture", "epochs", "image_size", "base_dataset")
# Checking for a cancel and writing progress: at most this often, so a run costs the database little.
PROGRESS_INTERVAL_S = 1.0


class TrainingRunError(ValueError):
    """A training run that cannot start or cannot train; the message says why in one line."""


class BulkJobError(ValueError):
    """A bulk re-classification that cannot start."""


def training_recipe_default() -> dict:
    """The recipe a one-click "Retrain now" uses (settings VITRINE_RETRAIN_*)."""
    return {
        "architecture": settings.VITRINE_RETRAIN_ARCH,
        "epochs": settings.VITRINE_RETRAIN_EPOCHS,
        "image_size": settings.VITRINE_RETRAIN_IMAGE_SIZE,
        "base_dataset": settings.VITRINE_RETRAIN_BASE_DATASET,
    }


def training_run_create(
    *,
    architecture: str,
    epochs: int | None,
    image_size: int,
    base_dataset: str = "",
    created_by: AbstractBaseUser | None = None,
) -> TrainingRun:
    """Records a queued run and sends it to the training queue after commit.

    Refused (TrainingRunError) while another run is queued or running, or for settings it cannot train with.
    `epochs` None means the architecture's own number of epochs.
    """
    from classifier.ml.architectures import ARCHITECTURES, recipe_for

    if architecture not in ARCHITECTURES:
        raise TrainingRunError(
            f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}"
        )
    epochs = recipe_for(architecture).epochs if epochs is None else int(epochs)
    if not 1 <= epochs <= 10_000:
        raise TrainingRunError(f"epochs must be between 1 and 10000, not {epochs}")
    if not 8 <= int(image_size) <= 1024:
        raise TrainingRunError(f"image size must be between 8 and 1024 pixels, not {image_size}")
    if base_dataset and base_dataset not in base_dataset_choices():
        raise TrainingRunError(f"no photo folder named {base_dataset!r} in {settings.VITRINE_DATASETS_DIR}")
    training_runs_sweep()
    with transaction.atomic():
        busy = training_run_busy()
        if busy is not None:
            raise TrainingRunError(
                f"training run {busy.pk} is {busy.get_status_display().lower()}; "
                "wait until it ends or cancel it before starting another"
            )
        run = TrainingRun.objects.create(
            params={
                "architecture": architecture,
                "epochs": epochs,
                "image_size": int(image_size),
                "base_dataset": base_dataset,
            },
            progress={"epoch": 0, "epochs": epochs},
            created_by=created_by,
        )
        transaction.on_commit(partial(training_run_enqueue, run_id=run.pk), robust=True)
    return run


def training_run_enqueue(*, run_id: int) -> bool:
    """Sends the run to the training queue; False without a broker (the sweep resends it). Never raises."""
    from classifier.tasks import train_model

    try:
        train_model.apply_async(kwargs={"run_id": run_id})
    except Exception as error:  # Any failure to publish means the same thing: the sweep must send it later.
        logger.warning("training run %s stays queued: cannot reach the broker (%s)", run_id, error)
        return False
    return True


@transaction.atomic
def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one stops within about a second, writing nothing."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status == TrainingRun.Status.QUEUED:
        run.status = TrainingRun.Status.CANCELLED
        run.cancel_requested = True
        run.finished_at = timezone.now()
        run.message = "Cancelled before it started."
        run.save(update_fields=["status", "cancel_requested", "finished_at", "message"])
    elif run.status == TrainingRun.Status.RUNNING:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
    else:
        raise TrainingRunError(
            f"training run {run.pk} has already ended ({run.get_status_display().lower()})"
        )
    return run


@dataclass
class TrainingSet:
    """The labelled photos a run trains on, before any is decoded."""

    files: list[tuple[str, str]] = field(default_factory=list)
    photos_per_category: Counter = field(default_factory=Counter)
    left_out: dict[str, int] = field(default_factory=dict)
    base_photos: int = 0
    fingerprint: str = ""


def _category_label_for_folder(folder_name: str) -> str | None:
    """A base data set's class folder as a category name: an existing category (merges followed) by slug or
    name, or the folder's own name; None when that category is retired."""
    name = " ".join(folder_name.split())
    category = (
        Category.objects.filter(slug=slugify(name)).first() or Category.objects.filter(name=name).first()
    )
    if category is None:
        return name
    if category.merged_into_id is not None:
        category = category_for_prediction(label=category.name)
    return category.name if category.is_active else None


def _base_dataset_files(base_dataset: str) -> list[tuple[pathlib.Path, str]]:
    root = pathlib.Path(settings.VITRINE_DATASETS_DIR) / base_dataset
    split_roots = [root / split for split in ("train", "validation", "test") if (root / split).is_dir()]
    labels: dict[str, str | None] = {}
    files = []
    for split_root in split_roots or [root]:
        for class_folder in sorted(child for child in split_root.iterdir() if child.is_dir()):
            if class_folder.name.startswith("."):
                continue
            if class_folder.name not in labels:
                labels[class_folder.name] = _category_label_for_folder(class_folder.name)
            label = labels[class_folder.name]
            if label is None:
                continue
            files += [
                (path, label)
                for path in sorted(class_folder.rglob("*"))
                if path.is_file() and not path.name.startswith(".")
            ]
    return files


def training_set_collect(*, base_dataset: str = "") -> TrainingSet:
    """The reviewed products of active categories (a person set their category), plus the base data set's
    photos when named; categories with too few photos are left out. Raises TrainingRunError below 2."""
    training_set = TrainingSet()
    products = (
        Product.objects.filter(
            category_source=Product.CategorySource.PERSON, category__isnull=False, category__is_active=True
        )
        .select_related("category")
        .order_by("pk")
    )
    labelled: list[tuple[str, str, str]] = []
    for product in products:
        labelled.append(
            (default_storage.path(product.image.name), product.category.name, product.image_sha256)
        )
    base_files = _base_dataset_files(base_dataset) if base_dataset else []
    training_set.base_photos = len(base_files)
    for path, label in base_files:
        stat = path.stat()
        labelled.append(
            (str(path), label, f"{path.relative_to(settings.VITRINE_DATASETS_DIR)}:{stat.st_size}")
        )
    counts = Counter(label for _, label, _ in labelled)
    minimum = settings.VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY
    training_set.left_out = {label: count for label, count in sorted(counts.items()) if count < minimum}
    kept = [entry for entry in labelled if entry[1] not in training_set.left_out]
    training_set.photos_per_category = Counter(label for _, label, _ in kept)
    if len(training_set.photos_per_category) < 2:
        found = ", ".join(f"{label}: {count}" for label, count in sorted(counts.items())) or "none"
        raise TrainingRunError(
            f"training needs reviewed photos in at least 2 active categories, {minimum} or more each "
            f"(found {found}); accept or correct products in the review queue first"
        )
    training_set.files = [(path, label) for path, label, _ in kept]
    identity = sorted([label, content] for _, label, content in kept)
    training_set.fingerprint = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    return training_set


class _Heartbeat:
    """While a run trains, a thread marks it alive now and then; a run silent for long is swept as failed."""

    def __init__(self, *, run_id: int, interval_s: float) -> None:
        self._run_id = run_id
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"training-run-{run_id}-heartbeat", daemon=True
        )

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                TrainingRun.objects.filter(pk=self._run_id, status=TrainingRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception as error:  # A lost heartbeat only risks a late sweep; the training goes on.
            logger.warning("training run %s: heartbeat stopped (%s)", self._run_id, error)
        finally:
            # This thread's own connection; nothing else would close it.
            connections.close_all()


class _RunReporter:
    """Writes training progress to the run and reads whether a person cancelled it, at most once a second."""

    def __init__(self, *, run_id: int) -> None:
        self._run_id = run_id
        self._written_at = self._checked_at = float("-inf")
        self._pending: dict | None = None
        self.latest: dict = {}
        self._cancelled = False

    def progress(self, event: dict) -> None:
        self.latest = self._pending = {"stage": "training", **event}
        if time.monotonic() - self._written_at >= PROGRESS_INTERVAL_S:
            self._write()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= PROGRESS_INTERVAL_S:
            self._checked_at = now
            self._cancelled = TrainingRun.objects.filter(pk=self._run_id, cancel_requested=True).exists()
            if self._pending is not None and now - self._written_at >= PROGRESS_INTERVAL_S:
                self._write()
        return self._cancelled

    def _write(self) -> None:
        TrainingRun.objects.filter(pk=self._run_id).update(
            progress=self._pending, heartbeat_at=timezone.now()
        )
        self._written_at = time.monotonic()
        self._pending = None


def _training_run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Only a queued run starts, once: a second delivery of its message finds it running and does nothing."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            logger.info("training run %s no longer exists; nothing to train", run_id)
            return None
        if run.status != TrainingRun.Status.QUEUED:
            logger.info("training run %s is %s; duplicate message ignored", run_id, run.status)
            return None
        now = timezone.now()
        run.status = TrainingRun.Status.RUNNING
        run.started_at = run.heartbeat_at = now
        run.worker = worker
        run.progress = {"stage": "loading photos", "epoch": 0, "epochs": run.params.get("epochs")}
        run.save(update_fields=["status", "started_at", "heartbeat_at", "worker", "progress"])
    return run


def _training_run_finish(*, run_id: int, status: str, **fields: object) -> TrainingRun:
    TrainingRun.objects.filter(pk=run_id).update(status=status, finished_at=timezone.now(), **fields)
    run = TrainingRun.objects.select_related("model_version").get(pk=run_id)
    logger.info("training run %s %s: %s", run_id, status, run.error or run.message)
    return run


def _last_successful_run(*, exclude_id: int) -> TrainingRun | None:
    return (
        TrainingRun.objects.filter(status=TrainingRun.Status.SUCCEEDED)
        .exclude(pk=exclude_id)
        .select_related("model_version")
        .order_by("-finished_at", "-pk")
        .first()
    )


def _recipe(params: dict) -> dict:
    return {key: params.get(key) or None for key in RECIPE_KEYS}


def _trained_on_words(training_set: TrainingSet, *, skipped: int) -> str:
    per_category = training_set.photos_per_category
    categories = ", ".join(f"{label} ({count})" for label, count in sorted(per_category.items()))
    words = f"{sum(per_category.values())} photos in {len(per_category)} categories: {categories}."
    if training_set.base_photos:
        words += f" {training_set.base_photos} of them from the base data set."
    if training_set.left_out:
        left_out = ", ".join(f"{label} ({count})" for label, count in training_set.left_out.items())
        words += f" Left out, too few photos: {left_out}."
    if skipped:
        words += f" {skipped} unreadable or duplicate photos skipped."
    return words


def _train(run: TrainingRun, reporter: _RunReporter) -> TrainingRun:
    from classifier.ml.datasets import load_labelled_files
    from classifier.ml.train import train

    params = run.params
    training_set = training_set_collect(base_dataset=params.get("base_dataset") or "")
    TrainingRun.objects.filter(pk=run.pk).update(data_fingerprint=training_set.fingerprint)
    last = _last_successful_run(exclude_id=run.pk)
    if (
        last is not None
        and last.data_fingerprint == training_set.fingerprint
        and _recipe(last.params) == _recipe(params)
    ):
        made = f", which made {last.model_version.name}" if last.model_version_id else ""
        return _training_run_finish(
            run_id=run.pk,
            status=TrainingRun.Status.SKIPPED,
            data_fingerprint=training_set.fingerprint,
            message=(
                f"Skipped: the reviewed photos and the settings are the same as in run {last.pk}{made}. "
                "Review or correct products, then retrain."
            ),
        )
    warnings: list[str] = []
    size = int(params["image_size"])
    dataset = load_labelled_files(
        training_set.files,
        image_size=(size, size),
        seed=0,
        warn=warnings.append,
        name=f"catalog (run {run.pk})",
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    name = f"{params['architecture']}-run{run.pk}-{stamp}"
    # The random part keeps two databases (say, two test sessions) from writing into one folder.
    out_dir = pathlib.Path(settings.VITRINE_MODELS_DIR) / f"{name}-{uuid.uuid4().hex[:6]}"
    result = train(
        dataset=dataset,
        arch=params["architecture"],
        epochs=int(params["epochs"]),
        out_dir=out_dir,
        progress=reporter.progress,
        should_stop=reporter.should_stop,
    )
    with transaction.atomic():
        model_version = model_version_register(artifact_dir=result.artifact_dir, name=name)
        suggested = result.metrics.get("suggested_threshold")
        if suggested is not None:
            model_version.threshold = float(suggested)
            model_version.save(update_fields=["threshold"])
        accuracy = result.metrics.get("test_accuracy")
        scored = f" Test accuracy {accuracy:.1%}." if accuracy is not None else ""
        return _training_run_finish(
            run_id=run.pk,
            status=TrainingRun.Status.SUCCEEDED,
            model_version=model_version,
            data_fingerprint=training_set.fingerprint,
            progress=reporter.latest or run.progress,
            message=(
                f"Trained {model_version.name} (not active yet) on "
                f"{_trained_on_words(training_set, skipped=len(warnings))}{scored}"
            ),
        )


def training_run_execute(*, run_id: int, worker: str = "") -> TrainingRun | None:
    """Worker side: trains a queued run on the catalog's reviewed photos and registers an inactive version.

    Skipped when the photos, labels and settings equal the last successful run's; a failure records its
    reason and a cancel stops it, both leaving no version behind. The active version is never changed here.
    Returns None when there was nothing to do (the run is gone or no longer queued).
    """
    from classifier.ml.train import TrainingCancelled

    run = _training_run_claim(run_id=run_id, worker=worker)
    if run is None:
        return None
    reporter = _RunReporter(run_id=run_id)
    try:
        with _Heartbeat(run_id=run_id, interval_s=settings.VITRINE_TRAINING_HEARTBEAT_S):
            return _train(run, reporter)
    except TrainingCancelled:
        epoch = reporter.latest.get("epoch", 0)
        return _training_run_finish(
            run_id=run_id,
            status=TrainingRun.Status.CANCELLED,
            progress=reporter.latest or run.progress,
            message=(
                f"Cancelled by a person at epoch {epoch}/{run.params.get('epochs')}; "
                "no model version was made."
            ),
        )
    except Exception as error:
        # Every failure ends the run with its reason on the page; the log keeps the traceback.
        logger.exception("training run %s failed", run_id)
        reason = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, ValueError):
            reason = f"{type(error).__name__}: {reason}"
        return _training_run_finish(
            run_id=run_id,
            status=TrainingRun.Status.FAILED,
            progress=reporter.latest or run.progress,
            error=f"{reason}. The active model version was not changed.",
        )


def training_runs_sweep(*, stale_after_s: int | None = None) -> int:
    """Fails runs whose worker went silent (died), resends runs queued too long; returns how many failed."""
    if stale_after_s is None:
        stale_after_s = settings.VITRINE_TRAINING_STALE_AFTER_S
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after_s)
    failed = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=TrainingRun.Status.FAILED,
        finished_at=now,
        error=(
            f"The training worker stopped during the run (no sign of life for {stale_after_s} s). "
            "The active model version was not changed; start a new run."
        ),
    )
    for run_id in TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED, created_at__lt=cutoff
    ).values_list("pk", flat=True):
        training_run_enqueue(run_id=run_id)
    if failed:
        logger.warning("sweep: %s training runs without a live worker marked failed", failed)
    return failed


def training_runs_fail_orphaned(*, worker: str) -> int:
    """Fails the runs this worker claimed before it restarted: none of them can still be training."""
    failed = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, worker=worker).update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        error=(
            f"The training worker {worker} restarted during the run. "
            "The active model version was not changed."
        ),
    )
    if failed:
        logger.warning("%s training runs of worker %s marked failed after its restart", failed, worker)
    return failed


# Bulk re-classification: a BulkJob row, classified chunk by chunk on the inference queue.


@transaction.atomic
def bulk_job_create(
    *,
    products: Iterable[Product] | None = None,
    created_by: AbstractBaseUser | None = None,
    chunk_size: int | None = None,
) -> BulkJob:
    """Re-classifies `products` (None: every product there is now) with the active version, in the background.

    A person's category is never replaced; the job's progress is on its row. Raises BulkJobError when no
    version is active or nothing is chosen.
    """
    if model_version_active() is None:
        raise BulkJobError("no model version is active; activate one before re-classifying products")
    if products is None:
        last_product_id = Product.objects.aggregate(last=Max("pk"))["last"] or 0
        job = BulkJob(
            product_ids=None,
            last_product_id=last_product_id,
            total=Product.objects.filter(pk__lte=last_product_id).count(),
        )
    else:
        product_ids = sorted({product.pk for product in products})
        if not product_ids:
            raise BulkJobError("choose at least one product to re-classify")
        job = BulkJob(product_ids=product_ids, last_product_id=product_ids[-1], total=len(product_ids))
    job.chunk_size = chunk_size or settings.VITRINE_BULK_CHUNK_SIZE
    job.created_by = created_by
    job.save()
    transaction.on_commit(partial(bulk_job_enqueue, job_id=job.pk, cursor=0), robust=True)
    return job


def bulk_job_enqueue(*, job_id: int, cursor: int) -> bool:
    """Sends the job's chunk after `cursor` to the inference queue; False without a broker. Never raises."""
    from classifier.tasks import classify_products_chunk

    try:
        classify_products_chunk.apply_async(kwargs={"job_id": job_id, "cursor": cursor})
    except Exception as error:  # Any failure to publish means the same thing: the sweep must send it later.
        logger.warning("bulk job %s waits: cannot reach the broker (%s)", job_id, error)
        return False
    return True


def _bulk_job_next_ids(job: BulkJob) -> list[int]:
    if job.product_ids is None:
        return list(
            Product.objects.filter(pk__gt=job.cursor, pk__lte=job.last_product_id)
            .order_by("pk")
            .values_list("pk", flat=True)[: job.chunk_size]
        )
    start = bisect.bisect_right(job.product_ids, job.cursor)
    return job.product_ids[start : start + job.chunk_size]


def products_classify_batch(
    *, product_ids: list[int], model_version: ModelVersion, classifier: object
) -> int:
    """Classifies the products' photos in one batch with the given loaded version (worker side).

    Returns how many could not be classified (their photo is missing or unreadable; they are marked failed).
    """
    products = list(Product.objects.filter(pk__in=product_ids).order_by("pk"))
    readable, images, failed = [], [], 0
    for product in products:
        image, problem = _product_photo(product)
        if problem is None:
            readable.append(product)
            images.append(image)
        else:
            classification_fail(product_id=product.pk, error=problem, image_sha256=product.image_sha256)
            failed += 1
    predictions = classifier.predict_images(images) if images else []
    for product, prediction in zip(readable, predictions, strict=True):
        prediction_apply(
            product_id=product.pk,
            image_sha256=product.image_sha256,
            label=prediction.label,
            confidence=prediction.confidence,
            model_version=model_version,
        )
    return failed


def bulk_job_run_chunk(*, job_id: int, cursor: int) -> BulkJob | None:
    """Worker side: classifies the chunk after `cursor`, moves the cursor on and sends the next chunk.

    The chunk's results and the new cursor commit together, so a worker killed mid-chunk leaves the cursor
    where it was and the redelivered message does the chunk again. A message whose cursor is not the job's
    (a duplicate) changes nothing. Returns None when there was nothing to do.
    """
    from classifier import runtime

    with transaction.atomic():
        job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status not in (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING):
            return None
        if job.cursor != cursor:
            logger.info("bulk job %s is past %s already; duplicate message ignored", job_id, cursor)
            return None
        now = timezone.now()
        served = runtime.active_classifier()
        if served is None:
            job.status = BulkJob.Status.FAILED
            job.error = "No model version is active any more; activate one and start the job again."
            job.finished_at = now
            job.save(update_fields=["status", "error", "finished_at"])
            return job
        if job.status == BulkJob.Status.QUEUED:
            job.status = BulkJob.Status.RUNNING
            job.started_at = now
        product_ids = _bulk_job_next_ids(job)
        if product_ids:
            job.failed += products_classify_batch(
                product_ids=product_ids, model_version=served[0], classifier=served[1]
            )
            job.cursor = product_ids[-1]
            if job.product_ids is None:
                job.done += len(product_ids)
            else:
                job.done = bisect.bisect_right(job.product_ids, job.cursor)
        job.heartbeat_at = timezone.now()
        if not product_ids or not _bulk_job_next_ids(job):
            job.status = BulkJob.Status.SUCCEEDED
            # Products deleted meanwhile count as done: everything that still exists was classified.
            job.done = job.total
            job.finished_at = job.heartbeat_at
        else:
            transaction.on_commit(partial(bulk_job_enqueue, job_id=job.pk, cursor=job.cursor), robust=True)
        job.save()
    logger.info("bulk job %s: %s/%s products (%s)", job.pk, job.done, job.total, job.status)
    return job


def bulk_jobs_sweep(*, stale_after_s: int | None = None) -> int:
    """Sends again the next chunk of jobs that stopped moving (a worker died and the message was lost)."""
    if stale_after_s is None:
        stale_after_s = settings.VITRINE_BULK_STALE_AFTER_S
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after_s)
    stale = BulkJob.objects.filter(status__in=(BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    )
    sent = 0
    for job_id, cursor in stale.values_list("pk", "cursor"):
        if not bulk_job_enqueue(job_id=job_id, cursor=cursor):
            break
        # Not sent again before another full timeout has passed.
        BulkJob.objects.filter(pk=job_id).update(heartbeat_at=now)
        sent += 1
    if sent:
        logger.info("sweep: %s stalled bulk jobs sent again from their cursor", sent)
    return sent
