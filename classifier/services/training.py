"""Training runs: the admin's "Retrain now" -> a TrainingRun row -> the training queue -> a new, inactive
model version. Keras-free: the admin creates and cancels runs here; classifier.workers.training trains them.
"""

import hashlib
import json
import logging
import pathlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from catalog.queues import task_send
from catalog.selectors import category_by_name, category_merged_target, products_reviewed_for_training
from classifier.artifacts import stored_file_copy
from classifier.ml.formats import ARCHITECTURE_EPOCHS
from classifier.models import TrainingRun
from classifier.selectors import base_dataset_choices, model_version_active, training_run_busy
from classifier.services.dispatch import TRAIN_MODEL
from classifier.services.model_versions import model_version_register
from classifier.validators import threshold_problem

logger = logging.getLogger(__name__)

# With object storage, reviewed photos are copied here (under VITRINE_MODELS_DIR) for training.
PHOTO_CACHE_FOLDER = "photos"
# A pretrained backbone's frozen activations, one file per photo (under VITRINE_MODELS_DIR).
FEATURES_FOLDER = "features"
RECIPE_KEYS = ("architecture", "epochs", "image_size", "base_dataset", "base_version")
# full: every stage of the architecture's recipe; quick: only the active version's softmax layer, retrained.
KINDS = ("full", "quick")


class TrainingRunError(ValueError):
    """A training run that cannot start or cannot train; the message says why in one line."""


def training_recipe_default() -> dict:
    """The recipe a one-click "Retrain now" uses (settings VITRINE_RETRAIN_*)."""
    return {
        "architecture": settings.VITRINE_RETRAIN_ARCH,
        "epochs": settings.VITRINE_RETRAIN_EPOCHS,
        "image_size": settings.VITRINE_RETRAIN_IMAGE_SIZE,
        "base_dataset": settings.VITRINE_RETRAIN_BASE_DATASET,
    }


def _checked_epochs(*, architecture: str, epochs: int | None) -> int:
    epochs = ARCHITECTURE_EPOCHS[architecture] if epochs is None else int(epochs)
    if not 1 <= epochs <= 10_000:
        raise TrainingRunError(
            gettext("epochs must be between 1 and 10000, not %(epochs)s") % {"epochs": epochs}
        )
    return epochs


def _checked_base_dataset(base_dataset: str) -> str:
    if base_dataset and base_dataset not in base_dataset_choices():
        message = gettext("no photo folder named %(name)r in %(folder)s")
        raise TrainingRunError(message % {"name": base_dataset, "folder": settings.VITRINE_DATASETS_DIR})
    return base_dataset


def training_run_create(
    *,
    architecture: str,
    epochs: int | None,
    image_size: int,
    base_dataset: str = "",
    created_by: AbstractBaseUser | None = None,
) -> TrainingRun:
    """Records a queued full run and sends it to the training queue after commit.

    Refused (TrainingRunError) while another run is queued or running, or for settings it cannot train with.
    `epochs` None means the architecture's own number of epochs.
    """
    if architecture not in ARCHITECTURE_EPOCHS:
        raise TrainingRunError(
            gettext("unknown architecture %(architecture)r; choose one of: %(choices)s")
            % {"architecture": architecture, "choices": ", ".join(ARCHITECTURE_EPOCHS)}
        )
    epochs = _checked_epochs(architecture=architecture, epochs=epochs)
    if not 8 <= int(image_size) <= 1024:
        message = gettext("image size must be between 8 and 1024 pixels, not %(size)s")
        raise TrainingRunError(message % {"size": image_size})
    params = {
        "kind": "full",
        "architecture": architecture,
        "epochs": epochs,
        "image_size": int(image_size),
        "base_dataset": _checked_base_dataset(base_dataset),
    }
    return _training_run_queue(params=params, created_by=created_by)


def training_run_create_quick(
    *, epochs: int | None = None, created_by: AbstractBaseUser | None = None
) -> TrainingRun:
    """Records a queued quick run: the active version's softmax layer trained again on the reviewed photos
    (its other layers, photo size and architecture kept). Refused (TrainingRunError) without an active
    version trained here, or while another run is queued or running. `epochs` None: the retrain recipe's
    epochs (VITRINE_RETRAIN_EPOCHS), else the architecture's own."""
    active = model_version_active()
    if active is None:
        raise TrainingRunError(
            gettext(
                "a quick retrain starts from the active model version, and none is active; "
                "run a full retrain or activate a version first"
            )
        )
    if active.architecture not in ARCHITECTURE_EPOCHS:
        raise TrainingRunError(
            gettext(
                "the active version %(version)s (%(architecture)s) was not trained here, so a quick retrain "
                "cannot start from it; run a full retrain first"
            )
            % {"version": active.name, "architecture": active.architecture}
        )
    if epochs is None:
        epochs = settings.VITRINE_RETRAIN_EPOCHS
    params = {
        "kind": "quick",
        "architecture": active.architecture,
        "epochs": _checked_epochs(architecture=active.architecture, epochs=epochs),
        "base_dataset": _checked_base_dataset(settings.VITRINE_RETRAIN_BASE_DATASET),
        "base_version": active.pk,
    }
    return _training_run_queue(params=params, created_by=created_by)


def _training_run_queue(*, params: dict, created_by: AbstractBaseUser | None) -> TrainingRun:
    training_runs_sweep()
    with transaction.atomic():
        busy = training_run_busy()
        if busy is not None:
            raise TrainingRunError(
                gettext(
                    "training run %(run)s is %(status)s; "
                    "wait until it ends or cancel it before starting another"
                )
                % {"run": busy.pk, "status": busy.get_status_display().lower()}
            )
        run = TrainingRun.objects.create(
            params=params,
            progress={"epoch": 0, "epochs": params["epochs"]},
            created_by=created_by,
        )
        transaction.on_commit(partial(training_run_enqueue, run_id=run.pk), robust=True)
    return run


def training_run_enqueue(*, run_id: int) -> bool:
    """Sends the run to the training queue; False without a broker (the sweep resends it). Never raises."""
    return task_send(TRAIN_MODEL, unsent=f"training run {run_id} stays queued", run_id=run_id)


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
            gettext("training run %(run)s has already ended (%(status)s)")
            % {"run": run.pk, "status": run.get_status_display().lower()}
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
    category = category_by_name(name=folder_name)
    if category is None:
        return " ".join(folder_name.split())
    category = category_merged_target(category=category)
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


def _photo_on_disk(*, name: str, image_sha256: str) -> str:
    """A path the trainer can read: the stored file itself, or with object storage a copy in this host's
    cache (VITRINE_MODELS_DIR/photos/, by content hash, so a retrain downloads only photos new to it)."""
    try:
        return default_storage.path(name)
    except NotImplementedError:
        pass
    cache_dir = pathlib.Path(settings.VITRINE_MODELS_DIR) / PHOTO_CACHE_FOLDER
    cached = cache_dir / f"{image_sha256}{pathlib.PurePath(name).suffix.lower()}"
    if not cached.is_file():
        stored_file_copy(storage=default_storage, name=name, path=cached)
    return str(cached)


def training_set_collect(*, base_dataset: str = "") -> TrainingSet:
    """The reviewed products of active categories (a person set their category), plus the base data set's
    photos when named; categories with too few photos are left out. Raises TrainingRunError below 2."""
    training_set = TrainingSet()
    labelled: list[tuple[str, str, str]] = []
    for product in products_reviewed_for_training():
        labelled.append(
            (
                _photo_on_disk(name=product.image.name, image_sha256=product.image_sha256),
                product.category.name,
                product.image_sha256,
            )
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


def training_run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
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


def training_run_finish(*, run_id: int, status: str, **fields: object) -> TrainingRun:
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
    # Runs from before quick retrains were full ones.
    return {key: params.get(key) or None for key in RECIPE_KEYS} | {"kind": params.get("kind", "full")}


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


def training_run_skip_if_unchanged(*, run: TrainingRun, training_set: TrainingSet) -> TrainingRun | None:
    """Ends the run as skipped when the photos, labels and settings equal the last successful run's."""
    TrainingRun.objects.filter(pk=run.pk).update(data_fingerprint=training_set.fingerprint)
    last = _last_successful_run(exclude_id=run.pk)
    unchanged = (
        last is not None
        and last.data_fingerprint == training_set.fingerprint
        and _recipe(last.params) == _recipe(run.params)
    )
    if not unchanged:
        return None
    made = f", which made {last.model_version.name}" if last.model_version_id else ""
    return training_run_finish(
        run_id=run.pk,
        status=TrainingRun.Status.SKIPPED,
        data_fingerprint=training_set.fingerprint,
        message=(
            f"Skipped: the reviewed photos and the settings are the same as in run {last.pk}{made}. "
            "Review or correct products, then retrain."
        ),
    )


def training_features_dir() -> pathlib.Path:
    """Where training caches a pretrained backbone's activations of each photo (kept between runs)."""
    return pathlib.Path(settings.VITRINE_MODELS_DIR) / FEATURES_FOLDER


def training_run_artifact_dir(*, run: TrainingRun) -> tuple[str, pathlib.Path]:
    """The name of the version the run makes and the new folder its artifact goes to."""
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    quick = "-quick" if run.params.get("kind") == "quick" else ""
    name = f"{run.params['architecture']}{quick}-run{run.pk}-{stamp}"
    # The random part keeps two databases (say, two test sessions) from writing into one folder.
    return name, pathlib.Path(settings.VITRINE_MODELS_DIR) / f"{name}-{uuid.uuid4().hex[:6]}"


@transaction.atomic
def training_run_succeed(
    *,
    run: TrainingRun,
    name: str,
    artifact_dir: pathlib.Path,
    metrics: dict,
    training_set: TrainingSet,
    skipped: int,
    progress: dict,
) -> TrainingRun:
    """Registers the trained artifact as an inactive version with its suggested threshold; ends the run."""
    model_version = model_version_register(artifact_dir=artifact_dir, name=name)
    suggested = metrics.get("suggested_threshold")
    # A suggestion outside (0, 1] is no confidence: the version keeps the shop's default threshold then.
    if suggested is not None and threshold_problem(suggested) is None:
        model_version.threshold = float(suggested)
        model_version.save(update_fields=["threshold"])
    accuracy = metrics.get("test_accuracy")
    scored = f" Test accuracy {accuracy:.1%}." if accuracy is not None else ""
    return training_run_finish(
        run_id=run.pk,
        status=TrainingRun.Status.SUCCEEDED,
        model_version=model_version,
        data_fingerprint=training_set.fingerprint,
        progress=progress or run.progress,
        message=(
            f"Trained {model_version.name} (not active yet) on "
            f"{_trained_on_words(training_set, skipped=skipped)}{scored}"
        ),
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
