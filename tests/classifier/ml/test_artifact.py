import json
import pathlib

import numpy as np
import pytest

from classifier.ml.architectures import build_model
from classifier.ml.artifact import (
    METADATA_FILE,
    MODEL_FILE,
    ArtifactError,
    file_sha256,
    load_artifact,
    read_metadata,
    save_artifact,
)

CATEGORIES = [f"category-{index}" for index in range(10)]


def artifact_metadata(class_names: list[str]) -> dict:
    return {
        "class_names": class_names,
        "input_shape": [28, 28, 1],
        "preprocessing": {"style": "fashion-mnist", "input_shape": [28, 28, 1]},
        "architecture": "seed_lenet",
    }


@pytest.fixture
def saved(tmp_path: pathlib.Path):
    """(artifact directory, the model object that was saved) for an untrained 10-category LeNet."""
    model = build_model("seed_lenet", num_classes=10, input_shape=(28, 28, 1))
    path = save_artifact(out_dir=tmp_path / "artifact", model=model, metadata=artifact_metadata(CATEGORIES))
    return path, model


def test_round_trip_gives_identical_predictions(saved):
    path, model = saved
    pixels = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1)).astype(np.float32)

    artifact = load_artifact(path)

    assert artifact.class_names == CATEGORIES
    np.testing.assert_array_equal(
        np.asarray(artifact.model(pixels, training=False)), np.asarray(model(pixels, training=False))
    )


def test_metadata_records_the_model_checksum(saved):
    path, _ = saved

    metadata = read_metadata(path)

    assert metadata["model_sha256"] == file_sha256(path / MODEL_FILE)
    assert metadata["architecture"] == "seed_lenet"


def test_a_changed_model_file_is_refused(saved):
    path, _ = saved
    with (path / MODEL_FILE).open("ab") as model_file:
        model_file.write(b"\0")

    with pytest.raises(ArtifactError, match="checksum does not match"):
        load_artifact(path)


def test_a_different_category_count_is_refused(saved):
    path, _ = saved

    with pytest.raises(ArtifactError, match="artifact has 10 classes, expected 3"):
        load_artifact(path, expected_num_classes=3)


def test_metadata_naming_other_categories_than_the_model_predicts_is_refused(saved):
    path, _ = saved
    metadata = json.loads((path / METADATA_FILE).read_text())
    metadata["class_names"] = ["shirt", "dress", "shoe"]
    (path / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(ArtifactError, match="model predicts 10 classes but metadata names 3"):
        load_artifact(path)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no such model directory"):
        load_artifact(tmp_path / "nowhere")


def test_a_directory_without_metadata_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=f"{METADATA_FILE} is missing"):
        load_artifact(tmp_path)


def test_a_missing_model_file_is_refused(saved):
    path, _ = saved
    (path / MODEL_FILE).unlink()

    with pytest.raises(ArtifactError, match=f"{MODEL_FILE} is missing"):
        load_artifact(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable metadata"),
        ("[1, 2]", "expected a JSON object"),
        ('{"class_names": []}', "lacks"),
    ],
)
def test_unreadable_metadata_is_refused(saved, content, message):
    path, _ = saved
    (path / METADATA_FILE).write_text(content)

    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)


def test_a_damaged_model_archive_with_a_matching_checksum_is_refused(saved):
    path, _ = saved
    (path / MODEL_FILE).write_bytes(b"not a zip archive")
    metadata = json.loads((path / METADATA_FILE).read_text())
    metadata["model_sha256"] = file_sha256(path / MODEL_FILE)
    (path / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(ArtifactError, match="cannot load model"):
        load_artifact(path)
