"""The classifier a worker process serves: loaded once per process, swapped when another version is activated.

Only worker processes import this module (through classifier.services.product_classify): it loads TensorFlow,
which must never happen in a Celery parent before it forks its pool.
"""

import logging
import threading
import time

import numpy as np

from classifier.ml.serving import Classifier, configure_tensorflow
from classifier.models import ModelVersion
from classifier.services import model_version_active, model_version_artifact_dir

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_served: tuple[int, Classifier] | None = None
_device: str | None = None


class ServedModelError(RuntimeError):
    """The active model version's files do not match what was registered."""


def serving_device() -> str:
    """Sizes TensorFlow to this process's cores once, before any model loads; says which device serves."""
    global _device
    with _lock:
        if _device is None:
            _device = configure_tensorflow()
            logger.info("classifier runtime: TensorFlow on %s", _device)
        return _device


def _load(model_version: ModelVersion) -> Classifier:
    started = time.monotonic()
    classifier = Classifier.load(
        model_version_artifact_dir(model_version=model_version),
        expected_num_classes=len(model_version.class_names),
    )
    if classifier.metadata["model_sha256"] != model_version.model_sha256:
        raise ServedModelError(
            f"model version {model_version.name}: {classifier.path} holds another model than registered"
        )
    # The first call traces the compiled graph; doing it here keeps that second off the first product.
    classifier.predict_arrays(np.zeros((1, *classifier.input_shape), dtype=np.uint8))
    logger.info(
        "serving model version %s (id %s, %s, %s categories) on %s, loaded in %.1f s",
        model_version.name,
        model_version.pk,
        model_version.architecture,
        len(model_version.class_names),
        _device,
        time.monotonic() - started,
    )
    return classifier


def active_classifier() -> tuple[ModelVersion, Classifier] | None:
    """The active version and its loaded model, or None when no version is active.

    One small query per call finds the active version; the model is loaded only when that changed.
    """
    global _served
    model_version = model_version_active()
    if model_version is None:
        return None
    serving_device()
    with _lock:
        if _served is None or _served[0] != model_version.pk:
            _served = (model_version.pk, _load(model_version))
        return model_version, _served[1]


def warm_up() -> None:
    """Loads the active version now, so the first product does not wait for TensorFlow (worker side)."""
    device = serving_device()
    if active_classifier() is None:
        logger.info("classifier runtime on %s: no model version is active yet", device)
