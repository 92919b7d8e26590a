import dataclasses
import json
import pathlib

import keras
import numpy as np
import pytest

from classifier.ml.architectures import DEFAULT_ARCH, ArchitectureError
from classifier.ml.artifact import METADATA_FILE, MODEL_FILE, load_artifact, read_metadata
from classifier.ml.datasets import Dataset, load_dataset
from classifier.ml.evaluate import classification_report, confusion_matrix, evaluate, format_report
from classifier.ml.machine import machine_line
from classifier.ml.train import TrainingCancelled, TrainingError, format_progress, train

PROGRESS_KEYS = {"epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy", "elapsed_s", "eta_s"}
EVALUATION_FILES = (
    "classification_report.json",
    "classification_report.txt",
    "confusion_matrix.json",
    "confusion_matrix.png",
    "curves.png",
    "misclassified.png",
)


@pytest.fixture(scope="module")
def small_fashion(tiny_fashion: Dataset) -> Dataset:
    """100 Fashion-MNIST images per split: 4 batches of 32 per epoch."""
    return tiny_fashion.subset(per_split=100)


@pytest.fixture
def models_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """An empty folder of its own (tmp_path also holds the test's MEDIA_ROOT)."""
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_progress_is_reported_once_per_epoch_with_the_contract_keys(small_fashion, models_dir):
    events = []

    train(
        dataset=small_fashion,
        arch="seed_dense",
        epochs=3,
        out_dir=models_dir / "model",
        progress=events.append,
    )

    assert [event["epoch"] for event in events] == [1, 2, 3]
    assert all(event.keys() >= PROGRESS_KEYS and event["epochs"] == 3 for event in events)
    assert all(0.0 <= event["val_accuracy"] <= 1.0 for event in events)
    assert events[-1]["eta_s"] == 0.0
    assert events[-1]["elapsed_s"] >= events[0]["elapsed_s"]
    json.dumps(events)  # the admin stores the latest event in a JSONField


def test_progress_line_reads_like_the_cli_expects():
    line = format_progress(
        {
            "epoch": 3,
            "epochs": 10,
            "loss": 0.31244,
            "accuracy": 0.88712,
            "val_loss": 0.3301,
            "val_accuracy": 0.8802,
            "elapsed_s": 126.0,
            "eta_s": 90.0,
            "epoch_s": 42.2,
        }
    )

    assert line == "epoch 3/10  loss 0.3124  acc 0.8871  val_loss 0.3301  val_acc 0.8802  42s  eta 1m30s"


def test_should_stop_cancels_mid_epoch_and_writes_nothing(small_fashion, models_dir):
    checks = []

    def stop_on_third_batch() -> bool:
        checks.append(True)
        return len(checks) == 3

    with pytest.raises(TrainingCancelled):
        train(
            dataset=small_fashion,
            arch="seed_dense",
            epochs=2,
            out_dir=models_dir / "model",
            should_stop=stop_on_third_batch,
        )

    assert len(checks) == 3
    assert leftovers(models_dir) == []
    assert keras.mixed_precision.global_policy().name == "float32"


def test_should_stop_is_asked_after_every_batch(small_fashion, models_dir):
    checks = []

    train(
        dataset=small_fashion,
        arch="seed_dense",
        epochs=2,
        out_dir=models_dir / "model",
        should_stop=lambda: checks.append(True) and False,
    )

    assert len(checks) == 2 * 4


def test_same_seed_gives_the_same_model_and_another_seed_does_not(small_fashion, models_dir):
    def metrics(seed: int, name: str) -> dict:
        return train(
            dataset=small_fashion, arch="seed_dense", epochs=1, out_dir=models_dir / name, seed=seed
        ).metrics

    first, again, other = metrics(0, "a"), metrics(0, "b"), metrics(1, "c")

    assert first == again
    assert first["test_loss"] != other["test_loss"]


def test_artifact_holds_model_metadata_and_readable_evaluation(small_fashion, models_dir):
    result = train(dataset=small_fashion, arch="seed_dense", epochs=2, out_dir=models_dir / "model", seed=7)

    assert result.artifact_dir == models_dir / "model"
    assert {MODEL_FILE, METADATA_FILE, *EVALUATION_FILES} <= set(leftovers(result.artifact_dir))
    assert leftovers(models_dir) == ["model"]
    metadata = read_metadata(result.artifact_dir)
    assert metadata["class_names"] == small_fashion.class_names
    assert metadata["input_shape"] == [28, 28, 1]
    assert metadata["preprocessing"] == {"style": "fashion-mnist", "input_shape": [28, 28, 1]}
    assert (metadata["architecture"], metadata["epochs"], metadata["seed"], metadata["batch_size"]) == (
        "seed_dense",
        2,
        7,
        32,
    )
    assert metadata["data"]["fingerprint"] == small_fashion.fingerprint
    assert (metadata["data"]["train"], metadata["data"]["val"], metadata["data"]["test"]) == (100, 100, 100)
    assert set(metadata["library_versions"]) == {"tensorflow", "keras", "numpy", "pillow", "python"}
    assert metadata["created_at"].endswith("+00:00")
    # The training time is only comparable with the CPU it was measured on.
    assert metadata["seconds"] > 0
    assert metadata["machine"] == machine_line()
    # pytest.approx compares flat numbers: the per-category thresholds (a nested table) are compared apart.
    flat = {key: value for key, value in result.metrics.items() if key != "class_thresholds"}
    assert {key: metadata["metrics"][key] for key in flat} == pytest.approx(flat)
    assert metadata["metrics"]["class_thresholds"] == result.metrics["class_thresholds"]

    report = json.loads((result.artifact_dir / "classification_report.json").read_text())
    assert report["accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert set(report["per_class"]) == set(small_fashion.class_names)
    assert sum(scores["support"] for scores in report["per_class"].values()) == 100
    matrix = np.array(json.loads((result.artifact_dir / "confusion_matrix.json").read_text())["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 100
    assert np.trace(matrix) / 100 == pytest.approx(result.metrics["test_accuracy"])
    assert "Ankle boot" in (result.artifact_dir / "classification_report.txt").read_text()


def test_a_photo_folder_trains_into_a_photo_style_artifact(image_folder, models_dir):
    dataset = load_dataset(str(image_folder), image_size=(32, 32))

    result = train(dataset=dataset, arch="seed_dense", epochs=1, out_dir=models_dir / "shapes-model")

    metadata = read_metadata(result.artifact_dir)
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["preprocessing"] == {"style": "photo", "input_shape": [32, 32, 3]}


def test_a_data_set_without_validation_still_trains(small_fashion, models_dir):
    no_validation = dataclasses.replace(
        small_fashion, x_val=small_fashion.x_val[:0], y_val=small_fashion.y_val[:0]
    )
    events = []

    result = train(
        dataset=no_validation, arch="seed_dense", epochs=1, out_dir=models_dir / "m", progress=events.append
    )

    assert events[0]["val_loss"] is None and result.metrics["val_accuracy"] is None
    assert "val_loss" not in format_progress(events[0])


def test_one_category_is_refused_before_training(small_fashion, models_dir):
    one_class = dataclasses.replace(
        small_fashion,
        class_names=["Dress"],
        y_train=np.zeros_like(small_fashion.y_train),
        y_val=np.zeros_like(small_fashion.y_val),
        y_test=np.zeros_like(small_fashion.y_test),
    )

    with pytest.raises(TrainingError, match="at least 2 categories"):
        train(dataset=one_class, arch="seed_dense", epochs=1, out_dir=models_dir / "m")
    assert leftovers(models_dir) == []


def test_unknown_architecture_is_refused_before_training(small_fashion, models_dir):
    with pytest.raises(ArchitectureError, match="unknown architecture 'vgg'"):
        train(dataset=small_fashion, arch="vgg", epochs=1, out_dir=models_dir / "m")
    assert leftovers(models_dir) == []


def test_an_occupied_output_directory_is_left_alone(small_fashion, models_dir):
    (models_dir / "m").mkdir()
    (models_dir / "m" / "notes.txt").write_text("keep me")

    with pytest.raises(TrainingError, match="not an empty directory"):
        train(dataset=small_fashion, arch="seed_dense", epochs=1, out_dir=models_dir / "m")
    assert leftovers(models_dir / "m") == ["notes.txt"]


@pytest.mark.parametrize(("setting", "precision"), [("0", "float32"), ("1", "mixed_bfloat16")])
def test_precision_follows_the_override_and_the_global_policy_is_restored(
    setting, precision, small_fashion, models_dir
):
    result = train(
        dataset=small_fashion,
        arch="seed_dense",
        epochs=1,
        out_dir=models_dir / "m",
        mixed_precision=setting == "1",
    )

    assert read_metadata(result.artifact_dir)["precision"] == precision
    assert keras.mixed_precision.global_policy().name == "float32"


def test_report_scores_each_category_like_the_textbook():
    # 3 cats: 2 right + 1 called dog; 2 dogs: both right; 1 bird called cat.
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])

    matrix = confusion_matrix(y_true=y_true, y_pred=y_pred, num_classes=3)
    report = classification_report(matrix=matrix, class_names=["cat", "dog", "bird"])

    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["per_class"]["cat"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert report["per_class"]["dog"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert report["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["macro_avg"]["f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert report["weighted_avg"]["recall"] == pytest.approx(4 / 6)
    text = format_report(report)
    assert "bird" in text and "0.6667" in text and "macro avg" in text


def test_evaluate_without_history_skips_curves_but_writes_the_rest(small_fashion, models_dir):
    result = train(dataset=small_fashion, arch="seed_dense", epochs=1, out_dir=models_dir / "m")
    model = keras.saving.load_model(result.artifact_dir / MODEL_FILE)

    metrics = evaluate(
        model=model,
        x=small_fashion.x_val,
        y=small_fashion.y_val,
        class_names=small_fashion.class_names,
        out_dir=models_dir / "validation",
        prefix="val",
    )

    assert set(metrics) == {"val_accuracy", "val_loss", "val_macro_f1", "val_images"}
    assert "curves.png" not in leftovers(models_dir / "validation")
    assert "misclassified.png" in leftovers(models_dir / "validation")


def test_default_model_gives_a_mirrored_photo_the_same_answer(small_fashion, models_dir):
    result = train(dataset=small_fashion, arch=DEFAULT_ARCH, epochs=1, out_dir=models_dir / "mirror")
    model = load_artifact(result.artifact_dir).model
    pixels = small_fashion.x_test[:8].astype("float32")

    as_taken = np.asarray(model(pixels, training=False))
    mirrored = np.asarray(model(pixels[:, :, ::-1], training=False))

    np.testing.assert_allclose(as_taken, mirrored, atol=1e-6)
