"""Training on a pretrained backbone: activations once per photo, a head on them, then a short fine-tune.

The backbone's layers up to the recipe's `fine_tune_after` never change, so their output for each photo and
its mirror image is computed once, in batches, and kept in a cache keyed by the photo's content (so a second
training in the same process, say after a few products were added, only computes the new photos). The head
(dropout + softmax) learns on the pooled features in many cheap epochs; then the layers after the cache point
and the head train together for a few epochs at a low learning rate, batch-norm statistics frozen. The model
that comes out is the one Keras model train() was given, pixels in and probabilities out.
"""

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from classifier.ml.architectures import Recipe
from classifier.ml.backbones.efficientnet_lite import weights_origin
from classifier.ml.datasets import Dataset

ACTIVATION_CHUNK = 32
# Per process; 1 GiB holds the cached activations of about 7,500 photos and their mirror images (Lite2).
ACTIVATION_CACHE_MAX_BYTES = 1 << 30
# A progress event every few seconds while activations are computed, so people see the run is alive.
FEATURE_EVENT_INTERVAL_S = 5.0

# (stage, epochs done in earlier stages) -> the Keras callbacks for that stage's fit (progress, cancelling).
EpochCallbacks = Callable[[str, int], list[keras.callbacks.Callback]]


class ActivationCache:
    """Activations by (architecture, weights, layer, input shape, photo content); oldest out first."""

    def __init__(self, *, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple) -> np.ndarray | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        if key in self._entries:
            return
        self._entries[key] = value
        self._bytes += value.nbytes
        while self._bytes > self._max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes


ACTIVATIONS = ActivationCache(max_bytes=ACTIVATION_CACHE_MAX_BYTES)


@dataclass(frozen=True)
class TransferResult:
    history: dict[str, list[float]]  # head epochs, then fine-tune epochs
    backbone: dict  # origin of the weights and what was trained, for the artifact's metadata


def photo_digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()


def _mirror(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, ::-1]


class _ActivationReader:
    """The frozen front of the backbone, one compiled call per chunk of photos, through ACTIVATIONS."""

    def __init__(
        self,
        *,
        model: keras.Model,
        backbone: keras.Model,
        cut: str,
        backbone_key: tuple,
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
        self._key = backbone_key
        self._shape = tuple(front.output.shape[1:])
        self._report = report
        self._stop_requested = stop_requested
        self.computed = 0  # activations this reader had to compute (the rest came from the cache)

    def read(self, views: list[np.ndarray]) -> np.ndarray:
        """float16 activations of the photos of all views, in order, computing only what the cache lacks."""
        keys = [[(*self._key, photo_digest(photo)) for photo in photos] for photos in views]
        found = {key: ACTIVATIONS.get(key) for view_keys in keys for key in view_keys}
        missing = [
            (v, i)
            for v, view_keys in enumerate(keys)
            for i, key in enumerate(view_keys)
            if found[key] is None
        ]
        started = last_event = time.monotonic()
        for start in range(0, len(missing), ACTIVATION_CHUNK):
            self._stop_requested()
            chunk = missing[start : start + ACTIVATION_CHUNK]
            pixels = np.stack([views[v][i] for v, i in chunk]).astype(np.float32)
            for (v, i), value in zip(chunk, np.asarray(self._activations(pixels)), strict=True):
                found[keys[v][i]] = value.astype(np.float16)
                ACTIVATIONS.put(keys[v][i], found[keys[v][i]])
            self.computed += len(chunk)
            now = time.monotonic()
            done = start + len(chunk)
            if now - last_event >= FEATURE_EVENT_INTERVAL_S or done == len(missing):
                last_event = now
                elapsed = now - started
                self._report(
                    {
                        "stage": "features",
                        "photos": done,
                        "of": len(missing),
                        "elapsed_s": elapsed,
                        "eta_s": elapsed / done * (len(missing) - done),
                    }
                )
        ordered = [found[key] for view_keys in keys for key in view_keys]
        return np.stack(ordered) if ordered else np.zeros((0, *self._shape), dtype=np.float16)


class _CachedBatches(keras.utils.PyDataset):
    """Batches sliced from in-memory arrays (cast to float32 per batch), reshuffled every epoch when
    seeded; no copy of the whole set goes into a TensorFlow graph, however many photos the shop has."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, num_classes: int, seed: int | None):
        super().__init__()
        self._x = x
        self._targets = np.eye(num_classes, dtype=np.float32)[y]
        self._batch_size = batch_size
        self._order = np.arange(len(x))
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self._x) / self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        return self._x[rows].astype(np.float32), self._targets[rows]

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._rng.shuffle(self._order)


def _pooled_features(tail: keras.Model, activations: np.ndarray) -> np.ndarray:
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


def _compile(model: keras.Model, *, optimizer: keras.optimizers.Optimizer, recipe: Recipe) -> None:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def train_on_backbone(
    *,
    model: keras.Model,
    recipe: Recipe,
    dataset: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    report: Callable[[dict], None],
    epoch_callbacks: EpochCallbacks,
    stop_requested: Callable[[], None],
) -> TransferResult:
    """Trains model (built by a recipe with a backbone) in place: head on cached features, then fine-tune.

    epochs and batch_size are the head's; the fine-tune takes the recipe's epochs and learning rate.
    stop_requested() raises to cancel; report() receives the feature stage's progress events.
    """
    settings = recipe.backbone
    origin = weights_origin(settings.variant)
    backbone = model.get_layer(f"efficientnet_{settings.variant}")
    cut = settings.fine_tune_after
    reader = _ActivationReader(
        model=model,
        backbone=backbone,
        cut=cut,
        backbone_key=(model.name, origin.sha256, cut, tuple(model.input_shape[1:])),
        report=report,
        stop_requested=stop_requested,
    )
    features_started = time.monotonic()
    # Each photo and its mirror image: clothes look the same mirrored, a free second example.
    views = reader.read([dataset.x_train, _mirror(dataset.x_train), dataset.x_val])
    x_train, val_views = views[: 2 * len(dataset.x_train)], views[2 * len(dataset.x_train) :]
    y_train = np.concatenate([dataset.y_train, dataset.y_train])
    feature_seconds = time.monotonic() - features_started
    tail = keras.Model(backbone.get_layer(cut).output, backbone.output)
    dropout, category = model.get_layer("head_dropout"), model.get_layer("category")

    def batches(x: np.ndarray, y: np.ndarray, seed: int | None) -> _CachedBatches | None:
        if len(x) == 0:
            return None
        return _CachedBatches(x, y, batch_size=batch_size, num_classes=dataset.num_classes, seed=seed)

    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    features = keras.Input(shape=tail.output_shape[1:], name="backbone_features")
    head = keras.Model(features, category(dropout(features)), name="head")
    _compile(head, optimizer=recipe.make_optimizer(steps_per_epoch * epochs), recipe=recipe)
    history = head.fit(
        batches(_pooled_features(tail, x_train), y_train, seed),
        validation_data=batches(_pooled_features(tail, val_views), dataset.y_val, None),
        epochs=epochs,
        shuffle=False,  # the batches shuffle themselves, seeded
        verbose=0,
        callbacks=epoch_callbacks("head", 0),
    ).history

    if settings.fine_tune_epochs:
        # Frozen batch norm: the few photos of a shop would skew ImageNet's statistics.
        for layer in tail.layers:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        activations = keras.Input(shape=tail.input_shape[1:], name="backbone_activations")
        tuned = keras.Model(activations, category(dropout(tail(activations))), name="fine_tune")
        schedule = keras.optimizers.schedules.CosineDecay(
            settings.fine_tune_learning_rate, decay_steps=steps_per_epoch * settings.fine_tune_epochs
        )
        _compile(
            tuned,
            optimizer=keras.optimizers.AdamW(
                learning_rate=schedule, weight_decay=settings.fine_tune_weight_decay
            ),
            recipe=recipe,
        )
        fine_tune_history = tuned.fit(
            batches(x_train, y_train, seed + 1),
            validation_data=batches(val_views, dataset.y_val, None),
            epochs=settings.fine_tune_epochs,
            shuffle=False,
            verbose=0,
            callbacks=epoch_callbacks("fine-tune", epochs),
        ).history
        history = {key: [*values, *fine_tune_history.get(key, [])] for key, values in history.items()}

    return TransferResult(
        history=history,
        backbone={
            **origin.as_dict(),
            "variant": settings.variant,
            "fine_tuned_after": cut if settings.fine_tune_epochs else None,
            "fine_tune_epochs": settings.fine_tune_epochs,
            "activations_computed": reader.computed,
            "feature_seconds": round(feature_seconds, 1),
        },
    )
