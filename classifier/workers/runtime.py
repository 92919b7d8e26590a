"""The classifier a worker process serves: loaded once per process, swapped when another version is activated.

Only worker processes import this module (through classifier.workers.inference): it loads TensorFlow, which
must never happen in a Celery parent before it forks its pool.

A newly active version is served only if its model file is the one registered (sha256) and loads. A refused
version is logged once, in one line saying why, and the worker keeps serving the last good version it had;
without one, products stay queued for the sweep. The refused files are tried again once they change on disk.

Precision: a model runs in the precision it was trained in: on a GPU (or a bfloat16 CPU) mixed_bfloat16 with a
float32 softmax (classifier.ml.train), so confidences compared with the threshold are float32 either way;
a float32 model is not cast down at serving, which would move confidences near the threshold unmeasured.
"""

import logging
import threading
import time

import numpy as np

from classifier.artifacts import (
    ArtifactFetchError,
    model_version_artifact_dir,
    model_version_fetch,
    stored_model_signature,
)
from classifier.ml.formats import METADATA_FILE, MODEL_FILE
from classifier.ml.serving import Classifier, configure_tensorflow
from classifier.models import ModelVersion
from classifier.selectors import model_version_active
from classifier.services.model_versions import model_version_problem

logger = logging.getLogger(__name__)

# Size, mtime and inode of each file, and the registered hash and folder: any change means "try it again".
FileSignature = tuple[object, ...]

_lock = threading.Lock()
# The last version that loaded and passed its checks: it keeps serving while a newer one is refused.
_served: tuple[ModelVersion, Classifier] | None = None
# Refused version id -> the signature of its files then; tried again only once they change.
_refused: dict[int, FileSignature] = {}
_device: str | None = None


class ServedModelError(RuntimeError):
    """The active version cannot be served: its model file is not the registered one, or does not load."""


def serving_device() -> str:
    """Sizes TensorFlow to this process's cores once, before any model loads; says which device serves."""
    global _device
    with _lock:
        if _device is None:
            _device = configure_tensorflow()
        return _device


def _device_words() -> str:
    return _device if (_device or "").startswith("GPU") else f"{_device}, no GPU found"


def _describe(model_version: ModelVersion, classifier: Classifier) -> str:
    precision = classifier.metadata.get("precision", "float32")
    return (
        f"model version {model_version.name} (id {model_version.pk}, {model_version.architecture}, "
        f"{len(model_version.class_names)} categories, {precision})"
    )


def _files_signature(model_version: ModelVersion) -> FileSignature:
    artifact_dir = model_version_artifact_dir(model_version=model_version)
    signature: list[object] = [model_version.model_sha256, model_version.artifact_path]
    for name in (MODEL_FILE, METADATA_FILE):
        try:
            stat = (artifact_dir / name).stat()
            signature.append((stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            signature.append(None)
    if model_version.artifact_key:
        # A refused download leaves nothing on disk: what may change is the bucket's object.
        signature.append(stored_model_signature(model_version=model_version))
    return tuple(signature)


def model_version_load(*, model_version: ModelVersion) -> Classifier:
    """Loads the version after checking its file is the registered one; ServedModelError says why not.

    A version in the bucket is first fetched into this host's cache, kept only if it is the registered one.
    """
    fetched_before = (model_version_artifact_dir(model_version=model_version) / MODEL_FILE).is_file()
    try:
        artifact_dir = model_version_fetch(model_version=model_version)
    except ArtifactFetchError as error:
        raise ServedModelError(str(error)) from error
    if model_version.artifact_key and not fetched_before:
        logger.info(
            "fetched model version %s from the bucket into %s, sha256 %s… verified",
            model_version.name,
            artifact_dir,
            model_version.model_sha256[:12],
        )
    problem = model_version_problem(model_version=model_version)
    if problem is not None:
        raise ServedModelError(problem)
    try:
        classifier = Classifier.load(
            model_version_artifact_dir(model_version=model_version),
            expected_num_classes=len(model_version.class_names),
        )
        # The first call traces the compiled graph; doing it here keeps that second off the first product.
        classifier.predict_arrays(np.zeros((1, *classifier.input_shape), dtype=np.uint8))
    except Exception as error:  # Keras and TensorFlow raise many types; each means "cannot serve this file".
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ServedModelError(f"model version {model_version.name}: cannot load it ({reason})") from error
    return classifier


def _previous_version() -> ModelVersion | None:
    """The row of the version this process serves, read again (a person may have changed its threshold); None,
    and forgotten, when it was deleted since. Caller holds _lock."""
    global _served
    if _served is None:
        return None
    previous = ModelVersion.objects.filter(pk=_served[0].pk).first()
    if previous is None:
        _served = None
    return previous


def _switch_to(model_version: ModelVersion, *, previous: ModelVersion | None) -> Classifier | None:
    """Loads the newly active version; on refusal logs why, once, and returns None. Caller holds _lock."""
    global _served
    started = time.monotonic()
    try:
        classifier = model_version_load(model_version=model_version)
    except ServedModelError as error:
        _refused[model_version.pk] = _files_signature(model_version)
        keeps = (
            f"still serving model version {previous.name} (id {previous.pk})"
            if previous is not None
            else "no model version is served: products stay queued for the sweep"
        )
        logger.error("refusing %s; %s", error, keeps)
        return None
    _refused.pop(model_version.pk, None)
    _served = (model_version, classifier)
    logger.info(
        "serving %s on %s, loaded in %.1f s",
        _describe(model_version, classifier),
        _device_words(),
        time.monotonic() - started,
    )
    return classifier


def active_classifier() -> tuple[ModelVersion, Classifier] | None:
    """The version to classify with and its loaded model: the active one, or while the active one is refused
    the last good one this process loaded; None when neither exists (the product waits for the sweep).

    One small query per call finds the active version; the model is loaded only when that changed.
    """
    model_version = model_version_active()
    if model_version is None:
        return None
    serving_device()
    with _lock:
        if _served is not None and _served[0].pk == model_version.pk:
            return model_version, _served[1]
        previous = _previous_version()
        refused_signature = _refused.get(model_version.pk)
        if refused_signature is None or refused_signature != _files_signature(model_version):
            classifier = _switch_to(model_version, previous=previous)
            if classifier is not None:
                return model_version, classifier
        if previous is None:
            return None
        return previous, _served[1]


def warm_up() -> None:
    """Loads the active version now, so the first product does not wait for TensorFlow (worker side).

    Logs one line saying the device (GPU or not) and the version served, or why none is.
    """
    serving_device()
    if active_classifier() is None:
        reason = "none is active yet" if model_version_active() is None else "the active one was refused"
        logger.warning(
            "serving no model version on %s: %s; products wait in the queue", _device_words(), reason
        )
