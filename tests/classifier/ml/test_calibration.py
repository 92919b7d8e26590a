"""Temperature scaling and the expected calibration error, on synthetic predictions."""

import numpy as np
import pytest

from classifier.ml.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    softmax,
)


def over_confident(*, count: int = 4000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits three times too sharp: labels drawn from softmax(z), the model says softmax(3z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(count, classes))
    truth = softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return softmax(3.0 * logits), labels


def test_temperature_lowers_the_calibration_error_of_an_over_confident_model():
    probabilities, labels = over_confident()

    calibration = fit_calibration(probabilities=probabilities, y=labels, fitted_on="synthetic")

    assert calibration["temperature"] == pytest.approx(3.0, rel=0.1)
    assert calibration["ece_before"] > 0.1
    assert calibration["ece_after"] < calibration["ece_before"] / 3
    assert calibration["fitted_on"] == "synthetic"


def test_temperature_never_changes_the_best_category():
    probabilities, _ = over_confident(count=200)

    softened = apply_temperature(probabilities, temperature=2.5)

    np.testing.assert_array_equal(softened.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(softened.sum(axis=1), 1.0, atol=1e-6)
    assert (softened.max(axis=1) <= probabilities.max(axis=1) + 1e-6).all()


def test_temperature_one_leaves_probabilities_unchanged():
    probabilities, _ = over_confident(count=50)

    assert apply_temperature(probabilities, temperature=1.0) is probabilities


def test_a_calibrated_model_keeps_a_temperature_near_one():
    rng = np.random.default_rng(1)
    probabilities = softmax(rng.normal(0.0, 2.0, size=(4000, 4)))
    labels = np.array([rng.choice(4, p=row) for row in probabilities])

    assert fit_temperature(np.log(probabilities), labels) == pytest.approx(1.0, abs=0.1)
    assert expected_calibration_error(probabilities, labels) < 0.03


def test_fitting_is_deterministic():
    probabilities, labels = over_confident(count=500)

    first = fit_calibration(probabilities=probabilities, y=labels, fitted_on="a")
    second = fit_calibration(probabilities=probabilities, y=labels, fitted_on="a")

    assert first == second


def test_ece_of_a_perfect_and_a_hopeless_model():
    labels = np.array([0, 1, 2, 0])
    certain_and_right = np.eye(3)[labels]
    certain_and_wrong = np.eye(3)[(labels + 1) % 3]

    assert expected_calibration_error(certain_and_right, labels) == 0.0
    assert expected_calibration_error(certain_and_wrong, labels) == 1.0
