"""Training on a pretrained backbone: activations once per photo, a head on them, then a short fine-tune.

The backbone's layers up to the recipe's `fine_tune_after` never change, so their output for each photo and
its mirror image is computed once, in batches, and kept on disk (ActivationStore: one float16 file per photo
content, in a folder named after the frozen layers' weights), so a retrain after a few corrections, in this
process or a later one, computes only the new photos; the test photos go through the same cache, and the
evaluation scores the model from their cached features. The head (dropout + softmax) learns on the pooled
features of the pretrained blocks after the cut (kept on disk the same way) in many cheap epochs; then those
blocks and the head train together for a few epochs at a low learning rate, batch-norm statistics frozen.
The model that comes out is the one Keras model train() was given, pixels in and probabilities out.

train_head() is the quick retrain: only the softmax layer of a trained model learns, on the features of the
model as it is (through the same disk cache when it has a backbone), starting from its own softmax weights
when the categories are the same. Those features (the pooled output of the blocks after the cut, which the
fine-tune changed) are kept on disk too, one float16 file per photo in a folder named after those blocks'
weights: a full run leaves them for its model's first quick retrain, and a quick retrain, which leaves the
blocks as they are, for the next one; either then runs the blocks only over the photos it has not seen.
"""

import hashlib
import logging
import math
import os
import pathlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from classifier.ml.architectures import Recipe
from classifier.ml.backbones.efficientnet_lite import weights_origin
from classifier.ml.datasets import Dataset

logger = logging.getLogger(__name__)

ACTIVATION_CHUNK = 32
# A progress event every few seconds while activations are computed, so people see the run is alive.
FEATURE_EVENT_INTERVAL_S = 5.0
# The layer whose input is what the head learns on: the backbone's pooled output, or the softmax's input.
HEAD_DROPOUT = "head_dropout"
CATEGORY = "category"

# (stage, epochs done in earlier stages) -> the Keras callbacks for that stage's fit (progress, cancelling).
EpochCallbacks = Callable[[str, int], list[keras.callbacks.Callback]]


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


@dataclass(frozen=True)
class TransferResult:
    history: dict[str, list[float]]  # head epochs, then fine-tune epochs
    backbone: dict | None  # origin of the weights and what was trained, for the artifact's metadata
    # The trained model's probabilities for the dataset's test photos, from their cached features (the model
    # as served computes the same from pixels, to float16 rounding); None: run the model on them.
    test_probabilities: np.ndarray | None = None


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


def _mirror(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, ::-1]


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
        computed = _pooled_features(tail, compute(list(missing.values()))).astype(np.float16)
        for digest, value in zip(missing, computed, strict=True):
            found[digest] = value
            if store is not None:
                store.put(digest, value)
    if not digests:
        return np.zeros((0, *tail.output_shape[1:]), dtype=np.float16), 0
    return np.stack([found[digest] for digest in digests]), len(missing)


def _model_features(
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


def _tail_features(
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


def _probabilities(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """The head's category probabilities (dropout off) for pooled features."""
    if len(features) == 0:
        return np.zeros((0, head.output_shape[-1]), dtype=np.float32)
    return np.asarray(head.predict(features.astype(np.float32), batch_size=256, verbose=0), dtype=np.float32)


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
    features_dir: pathlib.Path | None,
    report: Callable[[dict], None],
    epoch_callbacks: EpochCallbacks,
    stop_requested: Callable[[], None],
) -> TransferResult:
    """Trains model (built by a recipe with a backbone) in place: head on cached features, then fine-tune.

    epochs and batch_size are the head's; the fine-tune takes the recipe's epochs and learning rate.
    Activations are cached under features_dir (None: not cached). stop_requested() raises to cancel;
    report() receives the feature stage's progress events.
    """
    settings = recipe.backbone
    origin = weights_origin(settings.variant)
    backbone = model.get_layer(f"efficientnet_{settings.variant}")
    cut = settings.fine_tune_after
    reader = ActivationReader(
        model=model,
        backbone=backbone,
        cut=cut,
        features_dir=features_dir,
        report=report,
        stop_requested=stop_requested,
    )
    features_started = time.monotonic()
    # Each photo and its mirror image: clothes look the same mirrored, a free second example.
    # The test photos too: the evaluation and the next quick retrain then read them from the cache.
    views = reader.read([dataset.x_train, _mirror(dataset.x_train), dataset.x_val, dataset.x_test])
    train_end = 2 * len(dataset.x_train)
    x_train = views[:train_end]
    val_views = views[train_end : train_end + len(dataset.x_val)]
    y_train = np.concatenate([dataset.y_train, dataset.y_train])
    feature_seconds = time.monotonic() - features_started
    tail = keras.Model(backbone.get_layer(cut).output, backbone.output)
    dropout, category = model.get_layer("head_dropout"), model.get_layer("category")

    def batches(x: np.ndarray, y: np.ndarray, seed: int | None) -> _CachedBatches | None:
        if len(x) == 0:
            return None
        return _CachedBatches(x, y, batch_size=batch_size, num_classes=dataset.num_classes, seed=seed)

    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    # The pretrained blocks' features: from disk on a retrain, like the activations they come from.
    pretrained_features = _tail_features(
        reader=reader, tail=tail, activations=views, features_dir=features_dir
    )
    features = keras.Input(shape=tail.output_shape[1:], name="backbone_features")
    head = keras.Model(features, category(dropout(features)), name="head")
    _compile(head, optimizer=recipe.make_optimizer(steps_per_epoch * epochs), recipe=recipe)
    history = head.fit(
        batches(pretrained_features[:train_end], y_train, seed),
        validation_data=batches(
            pretrained_features[train_end : train_end + len(dataset.x_val)], dataset.y_val, None
        ),
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
    kept_started = time.monotonic()
    test_start = len(views) - len(dataset.x_test)
    # Kept on disk for this model's quick retrains; without a disk cache only the test photos are needed.
    test_features = (
        _tail_features(reader=reader, tail=tail, activations=views, features_dir=features_dir)[test_start:]
        if features_dir is not None
        else _pooled_features(tail, views[test_start:])
    )

    return TransferResult(
        history=history,
        backbone={
            **origin.as_dict(),
            "variant": settings.variant,
            "fine_tuned_after": cut if settings.fine_tune_epochs else None,
            "fine_tune_epochs": settings.fine_tune_epochs,
            "activations_computed": reader.computed,
            "activations_key": reader.key,
            "feature_seconds": round(feature_seconds, 1),
            "model_features_seconds": round(time.monotonic() - kept_started, 1),
        },
        # The head's layers are the fine-tuned model's last ones.
        test_probabilities=_probabilities(head, test_features),
    )


def _unwrapped(model: keras.Model) -> keras.Model:
    """The trained model inside with_mirror_average()'s wrapper, or the model itself."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if any(layer.name == "category_mirror_average" for layer in model.layers) and len(inner) == 1:
        return inner[0]
    return model


def train_head(
    *,
    model: keras.Model,
    recipe: Recipe,
    class_names: list[str],
    backbone_metadata: dict | None,
    dataset: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    features_dir: pathlib.Path | None,
    report: Callable[[dict], None],
    epoch_callbacks: EpochCallbacks,
    stop_requested: Callable[[], None],
) -> tuple[keras.Model, TransferResult]:
    """The quick retrain: a trained model (as loaded from its artifact) with only its softmax layer trained
    again on dataset, everything before it unchanged; returns the new model (unwrapped from any mirror
    average) and its history.

    The softmax starts from the model's own weights when dataset has the same categories in the same order
    (class_names), else from scratch. A model with a backbone reads its frozen front's activations through
    the disk cache under features_dir, then runs its own (possibly fine-tuned) blocks after the cut.
    """
    model = _unwrapped(model)
    names = {layer.name for layer in model.layers}
    dropout = model.get_layer(HEAD_DROPOUT) if HEAD_DROPOUT in names else None
    category = model.get_layer(CATEGORY)
    keep_softmax = list(dataset.class_names) == list(class_names)
    features_started = time.monotonic()
    train_views = 2 * len(dataset.x_train)
    if recipe.backbone is not None:
        backbone = model.get_layer(f"efficientnet_{recipe.backbone.variant}")
        cut = recipe.backbone.fine_tune_after
        reader = ActivationReader(
            model=model,
            backbone=backbone,
            cut=cut,
            features_dir=features_dir,
            report=report,
            stop_requested=stop_requested,
        )
        tail = keras.Model(backbone.get_layer(cut).output, backbone.output)
        features, features_computed = _model_features(
            reader=reader,
            tail=tail,
            views=[dataset.x_train, _mirror(dataset.x_train), dataset.x_val, dataset.x_test],
            features_dir=features_dir,
        )
        val_end = train_views + len(dataset.x_val)
        x_train, x_val, x_test = features[:train_views], features[train_views:val_end], features[val_end:]
        backbone_metadata = {
            **(backbone_metadata or {}),
            "activations_computed": reader.computed,
            "activations_key": reader.key,
            "model_features_computed": features_computed,
        }
    else:
        body = keras.Model(model.input, (dropout or category).input)
        x_train = _pooled_features(body, np.concatenate([dataset.x_train, _mirror(dataset.x_train)]))
        x_val = _pooled_features(body, dataset.x_val)
        x_test = None
    feature_seconds = time.monotonic() - features_started
    y_train = np.concatenate([dataset.y_train, dataset.y_train])

    softmax = (
        category
        if keep_softmax
        else keras.layers.Dense(dataset.num_classes, activation="softmax", dtype="float32", name=CATEGORY)
    )
    features = keras.Input(shape=x_train.shape[1:], name="model_features")
    head = keras.Model(features, softmax(dropout(features) if dropout is not None else features), name="head")
    _compile(
        head, optimizer=recipe.make_optimizer(math.ceil(len(x_train) / batch_size) * epochs), recipe=recipe
    )

    def batches(x: np.ndarray, y: np.ndarray, seed: int | None) -> _CachedBatches | None:
        if len(x) == 0:
            return None
        return _CachedBatches(x, y, batch_size=batch_size, num_classes=dataset.num_classes, seed=seed)

    history = head.fit(
        batches(x_train, y_train, seed),
        validation_data=batches(x_val, dataset.y_val, None),
        epochs=epochs,
        shuffle=False,  # the batches shuffle themselves, seeded
        verbose=0,
        callbacks=epoch_callbacks("head", 0),
    ).history
    if not keep_softmax:
        # The same layers (so the same weights) with the new softmax in the old one's place.
        model = keras.models.clone_model(
            model, clone_function=lambda layer: softmax if layer.name == CATEGORY else layer
        )
    if backbone_metadata is not None:
        backbone_metadata = {**backbone_metadata, "feature_seconds": round(feature_seconds, 1)}
    return model, TransferResult(
        history=history,
        backbone=backbone_metadata,
        test_probabilities=None if x_test is None else _probabilities(head, x_test),
    )
