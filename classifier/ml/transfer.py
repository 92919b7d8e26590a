"""Training on a pretrained backbone: a head on cached features, then a short fine-tune.

The frozen front's activations for each photo and its mirror image, and the test photos', come through the
disk cache of classifier.ml.feature_cache; the evaluation scores the model from the test photos' cached
features. The head (dropout + softmax) learns on the pooled features of the pretrained blocks after the cut
(kept on disk the same way) in many cheap epochs; then those blocks and the head train together for a few
epochs at a low learning rate, batch-norm statistics frozen. The model that comes out is the one Keras
model train() was given, pixels in and probabilities out.

train_head() is the quick retrain: only the softmax layer of a trained model learns, on the features of the
model as it is (through the same disk cache when it has a backbone), starting from its own softmax weights
when the categories are the same. A full run leaves its model's features on disk for the first quick
retrain, and a quick retrain, which leaves the blocks as they are, for the next one; either then runs the
blocks only over the photos it has not seen.
"""

import functools
import math
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from classifier.ml.architectures import Recipe
from classifier.ml.backbones.efficientnet_lite import weights_origin
from classifier.ml.datasets import Dataset
from classifier.ml.feature_cache import ActivationReader, model_features, pooled_features, tail_features

# The layer whose input is what the head learns on: the backbone's pooled output, or the softmax's input.
HEAD_DROPOUT = "head_dropout"
CATEGORY = "category"

# (stage, epochs done in earlier stages) -> the Keras callbacks for that stage's fit (progress, cancelling).
EpochCallbacks = Callable[[str, int], list[keras.callbacks.Callback]]


@dataclass(frozen=True)
class TransferResult:
    history: dict[str, list[float]]  # head epochs, then fine-tune epochs
    backbone: dict | None  # origin of the weights and what was trained, for the artifact's metadata
    # The trained model's probabilities for the dataset's test photos, from their cached features (the model
    # as served computes the same from pixels, to float16 rounding); None: run the model on them.
    test_probabilities: np.ndarray | None = None


def _mirror(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, ::-1]


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


def _batches(
    x: np.ndarray, y: np.ndarray, seed: int | None, *, batch_size: int, num_classes: int
) -> _CachedBatches | None:
    """(x, y) in batches, reshuffled per epoch when seeded; None for no rows (fit then skips validation)."""
    if len(x) == 0:
        return None
    return _CachedBatches(x, y, batch_size=batch_size, num_classes=num_classes, seed=seed)


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
    dropout, category = model.get_layer(HEAD_DROPOUT), model.get_layer(CATEGORY)

    batches = functools.partial(_batches, batch_size=batch_size, num_classes=dataset.num_classes)

    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    # The pretrained blocks' features: from disk on a retrain, like the activations they come from.
    pretrained_features = tail_features(
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
        tail_features(reader=reader, tail=tail, activations=views, features_dir=features_dir)[test_start:]
        if features_dir is not None
        else pooled_features(tail, views[test_start:])
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
        features, features_computed = model_features(
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
        x_train = pooled_features(body, np.concatenate([dataset.x_train, _mirror(dataset.x_train)]))
        x_val = pooled_features(body, dataset.x_val)
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

    batches = functools.partial(_batches, batch_size=batch_size, num_classes=dataset.num_classes)

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
