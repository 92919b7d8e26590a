"""Backbone activations and pooled features kept on disk, one float16 file per photo content.

The backbone's layers up to a recipe's `fine_tune_after` never change, so their output for each photo is
computed once, in batches, and kept (ActivationStore, in a folder named after the frozen layers' weights):
a retrain after a few corrections, in this process or a later one, computes only the new photos. The pooled
output of the blocks after the cut is kept the same way, in a folder named after those blocks' weights: the
pretrained blocks' features for a full run's head, and a trained model's own features for its quick
retrains (classifier.ml.transfer trains on both).
"""

import hashlib
import logging
import os
import pathlib
import time
import uuid
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

ACTIVATION_CHUNK = 32
# A progress event every few seconds while activations are computed, so people see the run is alive.
FEATURE_EVENT_INTERVAL_S = 5.0


class ActivationStore:
    """Activations on disk: <folder>/<photo content sha256>.npy, float16, one folder per frozen front.

    Writes go through a temporary file and os.replace, so a reader never sees half a file; a file that
    cannot be read back (cut short, another shape) counts as missing and is computed again.
    """

    def __init__(self, folder: pathlib.Path, *, shape: tuple[int, ...]) -> None:
        self.folder = pathlib.Path(folder)
        self._shape = tuple(shape)

    def get(self, digest: str) -> np.ndarray | None:
        path = self.folder / f"{digest}.npy"
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as error:
            logger.warning("%s: unreadable cached activations, computing them again (%s)", path, error)
            return None
        if value.shape != self._shape or value.dtype != np.float16:
            logger.warning("%s: cached activations of shape %s, computing them again", path, value.shape)
            return None
        return value

    def put(self, digest: str, value: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{digest}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        try:
            with partial.open("wb") as file:
                np.save(file, value.astype(np.float16), allow_pickle=False)
            os.replace(partial, self.folder / f"{digest}.npy")
        finally:
            partial.unlink(missing_ok=True)


def photo_digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight of the model: another backbone, or the same one changed, gives another."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def model_features_key(activations_key: str, tail: keras.Model) -> str:
    """The folder of the pooled features of the blocks after the cut: their front's key and their weights."""
    return f"{activations_key}-pooled-{weights_digest(tail)[:16]}"


class ActivationReader:
    """The frozen front of the backbone (up to `cut`), one compiled call per chunk of photos, through the
    disk cache under features_dir (None: no cache, every photo computed)."""

    def __init__(
        self,
        *,
        model: keras.Model,
        backbone: keras.Model,
        cut: str,
        features_dir: pathlib.Path | None,
        report: Callable[[dict], None],
        stop_requested: Callable[[], None],
    ) -> None:
        front = keras.Model(backbone.input, backbone.get_layer(cut).output)
        # Scaling, grey to colour, resizing: the straight chain of layers between the pixels and the backbone.
        before_backbone = model.layers[1 : model.layers.index(backbone)]

        def activations(pixels: tf.Tensor) -> tf.Tensor:
            for layer in before_backbone:
                pixels = layer(pixels)
            return front(pixels, training=False)

        self._activations = tf.function(
            activations, input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
        )
        self._shape = tuple(front.output.shape[1:])
        # What the cached values depend on: the backbone, where it is cut, the photos' shape, the weights.
        side = "x".join(str(value) for value in model.input_shape[1:])
        self.key = f"{backbone.name}-{cut}-{side}-{weights_digest(front)[:16]}"
        self._store = (
            ActivationStore(pathlib.Path(features_dir) / self.key, shape=self._shape)
            if features_dir is not None
            else None
        )
        self._report = report
        self._stop_requested = stop_requested
        self.computed = 0  # activations this reader had to compute (the rest came from the cache)
        self.digests: list[str] = []  # the last read's photos' content digests, in order

    def read(self, views: list[np.ndarray]) -> np.ndarray:
        """float16 activations of the photos of all views, in order, computing only what the cache lacks."""
        digests = [[photo_digest(photo) for photo in photos] for photos in views]
        found: dict[str, np.ndarray | None] = {}
        for view_digests in digests:
            for digest in view_digests:
                if digest not in found:
                    found[digest] = self._store.get(digest) if self._store is not None else None
        missing: dict[str, tuple[int, int]] = {}
        for v, view_digests in enumerate(digests):
            for i, digest in enumerate(view_digests):
                if found[digest] is None and digest not in missing:
                    missing[digest] = (v, i)
        todo = list(missing.items())
        started = last_event = time.monotonic()
        for start in range(0, len(todo), ACTIVATION_CHUNK):
            self._stop_requested()
            chunk = todo[start : start + ACTIVATION_CHUNK]
            pixels = np.stack([views[v][i] for _, (v, i) in chunk]).astype(np.float32)
            for (digest, _), value in zip(chunk, np.asarray(self._activations(pixels)), strict=True):
                found[digest] = value.astype(np.float16)
                if self._store is not None:
                    self._store.put(digest, found[digest])
            self.computed += len(chunk)
            now = time.monotonic()
            done = start + len(chunk)
            if now - last_event >= FEATURE_EVENT_INTERVAL_S or done == len(todo):
                last_event = now
                elapsed = now - started
                self._report(
                    {
                        "stage": "features",
                        "photos": done,
                        "of": len(todo),
                        "elapsed_s": elapsed,
                        "eta_s": elapsed / done * (len(todo) - done),
                    }
                )
        self.digests = [digest for view_digests in digests for digest in view_digests]
        ordered = [found[digest] for digest in self.digests]
        return np.stack(ordered) if ordered else np.zeros((0, *self._shape), dtype=np.float16)


def pooled_features(tail: keras.Model, activations: np.ndarray) -> np.ndarray:
    """The backbone's pooled output for cached activations (the fixed part the head learns on)."""
    features = tf.function(
        lambda values: tail(values, training=False),
        input_signature=[tf.TensorSpec((None, *tail.input_shape[1:]), tf.float32)],
    )
    parts = [
        np.asarray(features(activations[start : start + 256].astype(np.float32)))
        for start in range(0, len(activations), 256)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, tail.output_shape[-1]), dtype=np.float32)


def _model_features_store(
    *, reader: ActivationReader, tail: keras.Model, features_dir: pathlib.Path | None
) -> ActivationStore | None:
    if features_dir is None:
        return None
    return ActivationStore(
        pathlib.Path(features_dir) / model_features_key(reader.key, tail), shape=tail.output_shape[1:]
    )


def _features_from_store(
    *,
    store: ActivationStore | None,
    digests: list[str],
    tail: keras.Model,
    compute: Callable[[list[int]], np.ndarray],
) -> tuple[np.ndarray, int]:
    """(float16 pooled features of the tail for the photos with these content digests, in order, how many
    were computed): from the store where it has them; compute(places, the first of each missing photo) gives
    the tail's input for the rest, whose features are then written to the store."""
    found = {digest: store.get(digest) if store is not None else None for digest in digests}
    missing: dict[str, int] = {}
    for place, digest in enumerate(digests):
        if found[digest] is None:
            missing.setdefault(digest, place)
    if missing:
        computed = pooled_features(tail, compute(list(missing.values()))).astype(np.float16)
        for digest, value in zip(missing, computed, strict=True):
            found[digest] = value
            if store is not None:
                store.put(digest, value)
    if not digests:
        return np.zeros((0, *tail.output_shape[1:]), dtype=np.float16), 0
    return np.stack([found[digest] for digest in digests]), len(missing)


def model_features(
    *, reader: ActivationReader, tail: keras.Model, views: list[np.ndarray], features_dir: pathlib.Path | None
) -> tuple[np.ndarray, int]:
    """(float16 pooled features of the photos of all views in order, how many were computed): from the disk
    cache of this tail's features where it has them, else the front's activations through the tail."""
    photos = [photo for view in views for photo in view]
    return _features_from_store(
        store=_model_features_store(reader=reader, tail=tail, features_dir=features_dir),
        digests=[photo_digest(photo) for photo in photos],
        tail=tail,
        compute=lambda places: reader.read([np.stack([photos[place] for place in places])]),
    )


def tail_features(
    *, reader: ActivationReader, tail: keras.Model, activations: np.ndarray, features_dir: pathlib.Path | None
) -> np.ndarray:
    """float16 pooled features of the tail, as its weights are now, for the photos of the reader's last read
    (their activations given): from this tail's disk cache where it has them, the rest computed and written
    there (all computed without a cache)."""
    features, _ = _features_from_store(
        store=_model_features_store(reader=reader, tail=tail, features_dir=features_dir),
        digests=reader.digests,
        tail=tail,
        compute=lambda places: activations[places],
    )
    return features
