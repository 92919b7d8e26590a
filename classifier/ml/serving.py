"""Serving a trained artifact: load once per process, classify batches of photos with one compiled call."""

import functools
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import PIL.Image
import tensorflow as tf

from classifier.ml import preprocess
from classifier.ml.artifact import Artifact, ArtifactError, file_sha256, load_artifact
from classifier.ml.calibration import apply_temperature
from classifier.ml.ood import OodError, OodModel, load_ood

SERVING_CHUNK = 64


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    top: list[tuple[str, float]]  # best first
    # Out-of-distribution score of the photo; None when the artifact has no statistics (older models).
    ood_score: float | None = None
    # Not a product it knows: the far-off score or the kind score is over the artifact's threshold for it.
    is_unfamiliar: bool = False
    # How much nearer the photo is to garments in general than to any known category (the kind check); None
    # when the artifact's statistics predate that check. is_unknown_kind: that check flagged it.
    kind_score: float | None = None
    is_unknown_kind: bool = False
    # The backbone's pooled features, L2-normalised, as float16 (a dot product is the cosine similarity);
    # None for models without a features output (the seed models).
    embedding: np.ndarray | None = None


def compiled_inference(
    *, model: keras.Model, input_shape: Sequence[int]
) -> Callable[[np.ndarray], tf.Tensor]:
    """model(pixels, training=False) as a graph traced once for any batch size (float32 pixels 0..255)."""
    # A partial, not a lambda: TensorFlow counts retraces per code object, and would warn when several
    # models (one trace each) share one lambda's code.
    return tf.function(
        functools.partial(model, training=False),
        input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)],
    )


def configure_tensorflow(*, threads: int | None = None) -> str:
    """Sizes TensorFlow's thread pools to the cores this process owns; returns a line for the logs.

    Call before TensorFlow runs any op: afterwards the pools are fixed and the line says so.
    """
    threads = threads or len(os.sched_getaffinity(0))
    note = ""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # One op at a time, each spread over the pool: two pools of `threads` would fight over the same cores.
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        note = ", pools already fixed by an earlier TensorFlow op"
    pools = f"{threads} thread{'s' if threads != 1 else ''}{note}"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
        return f"GPU: {', '.join(names)} (CPU {pools})"
    return f"CPU ({pools})"


def split_outputs(outputs: tf.Tensor | Sequence[tf.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, pooled features or None) from a model with one output or [probabilities, features]."""
    if isinstance(outputs, list | tuple):
        return np.asarray(outputs[0]), np.asarray(outputs[1]) if len(outputs) > 1 else None
    return np.asarray(outputs), None


def embeddings_normalised(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1, as float16: half the bytes, and cosine similarities stay within 1e-3."""
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float16)


def artifact_ood(artifact: Artifact) -> OodModel | None:
    """The artifact's out-of-distribution statistics (metadata "ood"), checked against their checksum."""
    info = artifact.metadata.get("ood")
    if not info:
        return None
    path = artifact.path / info["file"]
    if not path.is_file() or file_sha256(path) != info.get("sha256"):
        raise ArtifactError(f"{path}: missing, or checksum does not match metadata")
    try:
        return load_ood(path)
    except OodError as error:
        raise ArtifactError(str(error)) from error


class Classifier:
    """A loaded model with its category names and the preprocessing it was trained with."""

    def __init__(self, *, artifact: Artifact) -> None:
        self.path: pathlib.Path = artifact.path
        self.metadata: dict = artifact.metadata
        self.class_names: list[str] = list(artifact.metadata["class_names"])
        self.input_shape: tuple[int, int, int] = tuple(artifact.metadata["preprocessing"]["input_shape"])
        self.style: str = artifact.metadata["preprocessing"]["style"]
        self.model = artifact.model
        # Calibrated confidences: softmax(log p / T); artifacts without calibration keep T = 1.
        self.temperature: float = float((artifact.metadata.get("calibration") or {}).get("temperature", 1.0))
        self.ood: OodModel | None = artifact_ood(artifact)
        # Traced once for any batch size; every call then runs the graph without per-call Python overhead.
        self._probabilities = compiled_inference(model=self.model, input_shape=self.input_shape)

    @classmethod
    def load(cls, path: pathlib.Path, *, expected_num_classes: int | None = None) -> "Classifier":
        return cls(artifact=load_artifact(pathlib.Path(path), expected_num_classes=expected_num_classes))

    def predict_images(self, images: Sequence[PIL.Image.Image], *, top_k: int = 3) -> list[Prediction]:
        predictions: list[Prediction] = []
        for start in range(0, len(images), SERVING_CHUNK):
            pixels = preprocess.prepare_batch(
                images[start : start + SERVING_CHUNK], input_shape=self.input_shape, style=self.style
            )
            predictions += self.predict_arrays(pixels, top_k=top_k)
        return predictions

    def predict_arrays(self, x: np.ndarray, *, top_k: int = 3) -> list[Prediction]:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected pixels of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        top_k = max(1, min(top_k, len(self.class_names)))
        predictions: list[Prediction] = []
        for start in range(0, len(x), SERVING_CHUNK):
            chunk = tf.convert_to_tensor(x[start : start + SERVING_CHUNK].astype(np.float32))
            probabilities, features = split_outputs(self._probabilities(chunk))
            probabilities = apply_temperature(probabilities, temperature=self.temperature)
            scores = self.ood.scores(features) if self.ood is not None and features is not None else None
            kind_scores = (
                self.ood.kind_scores(features) if scores is not None and self.ood.checks_kind else None
            )
            embeddings = None if features is None else embeddings_normalised(features)
            for index, row in enumerate(probabilities):
                best = np.argsort(-row, kind="stable")[:top_k]
                top = [(self.class_names[i], float(row[i])) for i in best]
                score = None if scores is None else float(scores[index])
                far_off = score is not None and bool(self.ood.is_unfamiliar(score))
                kind_score = None if kind_scores is None else float(kind_scores[index])
                unknown_kind = kind_score is not None and bool(self.ood.is_unknown_kind(kind_score))
                predictions.append(
                    Prediction(
                        label=top[0][0],
                        confidence=top[0][1],
                        top=top,
                        ood_score=score,
                        is_unfamiliar=far_off or unknown_kind,
                        kind_score=kind_score,
                        is_unknown_kind=unknown_kind,
                        embedding=None if embeddings is None else embeddings[index],
                    )
                )
        return predictions
