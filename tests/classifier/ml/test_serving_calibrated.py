"""Serving applies an artifact's temperature and out-of-distribution statistics, and works without them."""

import keras
import numpy as np
import pytest

from classifier.ml.artifact import ArtifactError, file_sha256, save_artifact
from classifier.ml.calibration import apply_temperature
from classifier.ml.formats import OOD_FILE
from classifier.ml.ood import fit_ood, save_ood
from classifier.ml.serving import Classifier

SHAPE = (8, 8, 3)
CLASSES = ["hat", "shoes", "skirt"]
TEMPERATURE = 2.0


def two_output_model() -> keras.Model:
    """Pixels in, [probabilities, features] out, like the starter model."""
    inputs = keras.Input(shape=SHAPE, name="pixels")
    features = keras.layers.GlobalAveragePooling2D(name="features")(keras.layers.Rescaling(1 / 255)(inputs))
    probabilities = keras.layers.Dense(len(CLASSES), activation="softmax", name="category")(features)
    return keras.Model(inputs, [probabilities, features])


def pixels(count: int, *, seed: int, brightness: float = 128.0, spread: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colours = np.clip(brightness + spread * rng.normal(size=(count, 1, 1, 3)), 0, 255)
    return np.broadcast_to(colours, (count, *SHAPE)).astype(np.uint8)


def write_artifact(path, *, calibrated: bool) -> None:
    keras.utils.set_random_seed(0)
    model = two_output_model()
    metadata = {
        "class_names": CLASSES,
        "input_shape": list(SHAPE),
        "preprocessing": {"style": "photo", "input_shape": list(SHAPE)},
        "architecture": "two_output_test",
    }
    if calibrated:
        known = pixels(300, seed=0).mean(axis=(1, 2)) / 255
        labels = np.arange(300) % len(CLASSES)
        ood = fit_ood(known, labels, dimensions=2)
        path.mkdir(parents=True)
        save_ood(ood.with_threshold(ood.scores(known), keep_rate=0.95), path / OOD_FILE)
        metadata["calibration"] = {
            "temperature": TEMPERATURE,
            "ece_before": 0,
            "ece_after": 0,
            "fitted_on": "-",
        }
        metadata["ood"] = {"file": OOD_FILE, "sha256": file_sha256(path / OOD_FILE)}
    save_artifact(out_dir=path, model=model, metadata=metadata)


@pytest.fixture
def calibrated(tmp_path) -> Classifier:
    write_artifact(tmp_path / "calibrated", calibrated=True)
    return Classifier.load(tmp_path / "calibrated")


def test_confidence_is_calibrated_with_the_artifacts_temperature(calibrated: Classifier):
    x = pixels(5, seed=1)
    raw = np.asarray(calibrated.model(x.astype(np.float32), training=False)[0])

    predictions = calibrated.predict_arrays(x, top_k=3)

    expected = apply_temperature(raw, temperature=TEMPERATURE)
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction.label == CLASSES[int(row.argmax())]
        assert prediction.confidence == pytest.approx(float(row.max()), abs=1e-5)
        assert sum(confidence for _, confidence in prediction.top) == pytest.approx(1.0, abs=1e-5)


def test_photos_unlike_the_known_ones_are_flagged(calibrated: Classifier):
    known = calibrated.predict_arrays(pixels(40, seed=2))
    strange = calibrated.predict_arrays(pixels(10, seed=3, brightness=250.0, spread=2.0))

    assert all(prediction.ood_score is not None for prediction in known + strange)
    assert np.mean([prediction.is_unfamiliar for prediction in known]) <= 0.2
    assert all(prediction.is_unfamiliar for prediction in strange)


def test_photos_of_a_kind_it_was_not_taught_are_flagged_by_the_kind_check(tmp_path):
    keras.utils.set_random_seed(0)
    model = two_output_model()
    # Taught: dark and bright photos; not taught: mid-grey ones, between the two and as tightly grouped.
    taught = np.concatenate([pixels(150, seed=10, brightness=60.0), pixels(150, seed=11, brightness=200.0)])
    features = np.asarray(model(taught.astype(np.float32), training=False)[1])
    labels = np.repeat([0, 1], 150)
    held_out = np.concatenate([pixels(50, seed=12, brightness=60.0), pixels(50, seed=13, brightness=200.0)])
    held_out_features = np.asarray(model(held_out.astype(np.float32), training=False)[1])
    # No far-off threshold: only the kind check can flag a photo here.
    ood = fit_ood(features, labels, dimensions=2)
    ood = ood.with_kind_threshold(ood.kind_scores(held_out_features), keep_rate=0.95)
    (tmp_path / "kinds").mkdir()
    save_ood(ood, tmp_path / "kinds" / OOD_FILE)
    metadata = {
        "class_names": CLASSES,
        "input_shape": list(SHAPE),
        "preprocessing": {"style": "photo", "input_shape": list(SHAPE)},
        "architecture": "two_output_test",
        "ood": {"file": OOD_FILE, "sha256": file_sha256(tmp_path / "kinds" / OOD_FILE)},
    }
    save_artifact(out_dir=tmp_path / "kinds", model=model, metadata=metadata)
    classifier = Classifier.load(tmp_path / "kinds")

    known = classifier.predict_arrays(pixels(40, seed=14, brightness=200.0))
    other_kind = classifier.predict_arrays(pixels(40, seed=15, brightness=130.0))

    assert all(p.kind_score is not None for p in known + other_kind)
    assert np.mean([p.is_unfamiliar for p in known]) <= 0.15
    assert all(p.is_unfamiliar and p.is_unknown_kind for p in other_kind)


def test_artifacts_without_calibration_or_statistics_serve_as_before(tmp_path):
    write_artifact(tmp_path / "plain", calibrated=False)
    plain = Classifier.load(tmp_path / "plain")
    x = pixels(3, seed=4)
    raw = np.asarray(plain.model(x.astype(np.float32), training=False)[0])

    predictions = plain.predict_arrays(x)

    assert plain.temperature == 1.0 and plain.ood is None
    assert [p.confidence for p in predictions] == pytest.approx(raw.max(axis=1).tolist(), abs=1e-6)
    assert all(p.ood_score is None and p.kind_score is None and not p.is_unfamiliar for p in predictions)


def test_changed_ood_statistics_are_refused(tmp_path):
    write_artifact(tmp_path / "tampered", calibrated=True)
    (tmp_path / "tampered" / OOD_FILE).write_bytes(b"changed")

    with pytest.raises(ArtifactError, match="checksum"):
        Classifier.load(tmp_path / "tampered")


def test_each_prediction_carries_its_photos_unit_length_features(calibrated: Classifier):
    x = pixels(4, seed=6)
    features = np.asarray(calibrated.model(x.astype(np.float32), training=False)[1])

    predictions = calibrated.predict_arrays(x)

    for prediction, row in zip(predictions, features, strict=True):
        assert prediction.embedding.dtype == np.float16
        assert np.linalg.norm(prediction.embedding.astype(np.float32)) == pytest.approx(1.0, abs=1e-3)
        assert prediction.embedding == pytest.approx(row / np.linalg.norm(row), abs=1e-3)
