"""Model versions: registering a trained artifact, activating and rolling back, and checking that a version's
files are the ones registered. Keras-free: the admin, /healthz and the commands use it too.
"""

import json
import logging
import pathlib
import threading

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from catalog.services.categories import CategoryLabelError, category_for_label
from catalog.storefront_cache import catalog_changed
from classifier.artifacts import (
    artifact_storage,
    artifacts_upload,
    model_version_artifact_dir,
    stored_model_signature,
)
from classifier.ml.formats import METADATA_FILE, MODEL_FILE, ArtifactError, file_sha256, read_metadata
from classifier.models import ModelActivation, ModelVersion
from classifier.selectors import model_version_roll_back_target

logger = logging.getLogger(__name__)

_hash_lock = threading.Lock()
# path -> (size, mtime, inode) when hashed, and the digest: /healthz rehashes a model only after it changed.
_hashed_files: dict[pathlib.Path, tuple[tuple[int, int, int], str]] = {}


class ModelVersionError(ValueError):
    """A model directory that cannot become a model version (missing, unreadable, name already taken)."""


def model_version_threshold(*, model_version: ModelVersion, label: str | None = None) -> float:
    """The confidence at or above which this version files products by itself: for a predicted `label`, the
    category's own threshold where the version has one and per-category thresholds are on."""
    if label is not None and model_version.per_class_thresholds:
        own = ((model_version.metrics or {}).get("class_thresholds") or {}).get(label) or {}
        if own.get("own"):
            return own["threshold"]
    if model_version.threshold is not None:
        return model_version.threshold
    return settings.VITRINE_CONFIDENCE_THRESHOLD


def _metrics_with_safeguards(metadata: dict) -> dict:
    """The artifact's metrics, plus its calibration and out-of-distribution limit where it has them."""
    metrics = dict(metadata.get("metrics") or {})
    calibration = metadata.get("calibration") or {}
    if calibration:
        metrics["calibration"] = {
            key: calibration[key] for key in ("temperature", "ece_before", "ece_after") if key in calibration
        }
    ood = metadata.get("ood") or {}
    if ood:
        kept = ("threshold", "keep_rate", "score", "kind_threshold", "kind_keep_rate")
        metrics["ood"] = {key: ood[key] for key in kept if key in ood}
    return metrics


def model_version_register(
    *, artifact_dir: pathlib.Path, name: str | None = None, activate: bool = False
) -> ModelVersion:
    """Records a trained artifact directory (classifier.ml.artifact) as a model version, optionally active."""
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
    # In the bucket before the row exists: a version any host can see is one every host can fetch.
    artifact_key = ""
    if artifact_storage() is not None:
        try:
            artifact_key = artifacts_upload(artifact_dir=artifact_dir, model_sha256=metadata["model_sha256"])
        except Exception as error:  # botocore's errors: the bucket is unreachable or refuses the upload
            raise ModelVersionError(f"{artifact_dir}: cannot upload it to the bucket ({error})") from error
    with transaction.atomic():
        model_version = ModelVersion.objects.create(
            name=name,
            artifact_path=str(stored_path),
            artifact_key=artifact_key,
            model_sha256=metadata["model_sha256"],
            architecture=metadata["architecture"],
            class_names=list(metadata["class_names"]),
            metrics=_metrics_with_safeguards(metadata),
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
        message = gettext("model version %(version)s: %(problem)s")
        raise ModelVersionError(message % {"version": model_version.name, "problem": error}) from None
    previous = ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).first()
    was_active = ModelVersion.objects.filter(pk=model_version.pk, is_active=True).exists()
    ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
    model_version.is_active = True
    model_version.activated_at = timezone.now()
    model_version.save(update_fields=["is_active", "activated_at"])
    # The storefront's similar products come from the active version's embeddings: cached pages go stale.
    catalog_changed(using=ModelVersion.objects.db)
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
        raise ModelVersionError(
            gettext("nothing to roll back to: no other version was active before the current one")
        )
    return _activate(model_version=target, activated_by=activated_by, is_roll_back=True)


def _file_sha256_known(path: pathlib.Path) -> str:
    """The file's sha256, reusing an earlier digest while its size, mtime and inode are unchanged."""
    stat = path.stat()
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _hash_lock:
        known = _hashed_files.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    digest = file_sha256(path)
    with _hash_lock:
        _hashed_files[path] = (signature, digest)
    return digest


def _short(digest: str) -> str:
    return digest[:12]


def model_version_problem(*, model_version: ModelVersion, reuse_known_hashes: bool = False) -> str | None:
    """Why the version's files cannot be served, in one line naming the version and the file; None if intact.

    Intact: model.keras is the very file registered (its sha256 is ModelVersion.model_sha256) and
    metadata.json is readable and names that same file.
    """
    artifact_dir = model_version_artifact_dir(model_version=model_version)
    model_path = artifact_dir / MODEL_FILE
    metadata_path = artifact_dir / METADATA_FILE
    prefix = f"model version {model_version.name}"
    if model_version.artifact_key and not model_path.is_file():
        # Not fetched to this host (the web never fetches a model): the bucket must hold it for the workers.
        if stored_model_signature(model_version=model_version) == (None,):
            return f"{prefix}: the bucket has no {model_version.artifact_key}/{MODEL_FILE}"
        return None
    if not artifact_dir.is_dir():
        return f"{prefix}: its directory {artifact_dir} is missing"
    if not model_path.is_file():
        return f"{prefix}: {model_path} is missing"
    try:
        actual = _file_sha256_known(model_path) if reuse_known_hashes else file_sha256(model_path)
    except OSError as error:
        return f"{prefix}: cannot read {model_path} ({error.strerror or error})"
    if actual != model_version.model_sha256:
        return (
            f"{prefix}: {model_path} is corrupt or was replaced "
            f"(sha256 {_short(actual)}…, registered {_short(model_version.model_sha256)}…)"
        )
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        return f"{prefix}: {metadata_path} is missing"
    except (OSError, ValueError) as error:
        return f"{prefix}: {metadata_path} is unreadable ({error})"
    named = metadata.get("model_sha256") if isinstance(metadata, dict) else None
    if named != model_version.model_sha256:
        return f"{prefix}: {metadata_path} describes another model file (sha256 {_short(str(named))}…)"
    return None
