"""The suggested auto-filing threshold: the lowest confidence whose labels reach the target precision."""

import numpy as np
import pytest

from classifier.ml.evaluate import auto_filing_threshold, class_thresholds


def probabilities_for(*, confidences: list[float], predicted: list[int], num_classes: int = 3) -> np.ndarray:
    """Rows whose top class is `predicted` with probability `confidence`, the rest spread evenly."""
    rows = []
    for confidence, label in zip(confidences, predicted, strict=True):
        row = np.full(num_classes, (1.0 - confidence) / (num_classes - 1))
        row[label] = confidence
        rows.append(row)
    return np.asarray(rows)


def test_lowest_threshold_that_keeps_automatic_labels_precise() -> None:
    # Ten products, most confident first; the ones at 0.80 and 0.45 are filed under the wrong category.
    confidences = [0.99, 0.98, 0.95, 0.93, 0.90, 0.85, 0.80, 0.70, 0.60, 0.45]
    truth = [0] * 10
    predicted = [0, 0, 0, 0, 0, 0, 1, 0, 0, 2]
    probabilities = probabilities_for(confidences=confidences, predicted=predicted)

    strict = auto_filing_threshold(probabilities=probabilities, y=np.array(truth), target_precision=1.0)
    lenient = auto_filing_threshold(probabilities=probabilities, y=np.array(truth), target_precision=0.85)

    # 100 %: file only the six above the first mistake.
    assert strict["suggested_threshold"] == pytest.approx(0.85)
    assert strict["threshold_precision"] == 1.0
    assert strict["threshold_coverage"] == pytest.approx(0.6)
    # 85 %: nine filed with one mistake (89 %) is fine; all ten (80 %) is not.
    assert lenient["suggested_threshold"] == pytest.approx(0.60)
    assert lenient["threshold_precision"] == pytest.approx(8 / 9)
    assert lenient["threshold_coverage"] == pytest.approx(0.9)


def test_products_with_equal_confidence_are_filed_together() -> None:
    # A right and a wrong label share 0.9: a threshold cannot file one without the other.
    probabilities = probabilities_for(confidences=[0.95, 0.9, 0.9, 0.5], predicted=[0, 0, 1, 0])
    choice = auto_filing_threshold(
        probabilities=probabilities, y=np.zeros(4, dtype=int), target_precision=1.0
    )
    assert choice["suggested_threshold"] == pytest.approx(0.95)
    assert choice["threshold_coverage"] == pytest.approx(0.25)


def test_unreachable_precision_files_nothing_automatically() -> None:
    probabilities = probabilities_for(confidences=[0.9, 0.8], predicted=[1, 2])
    choice = auto_filing_threshold(
        probabilities=probabilities, y=np.zeros(2, dtype=int), target_precision=0.97
    )
    assert choice["suggested_threshold"] == 1.0
    assert choice["threshold_coverage"] == 0.0
    assert choice["threshold_target_precision"] == 0.97


def test_each_category_gets_the_lowest_threshold_its_own_photos_allow() -> None:
    # Class 0 ("shoes"): 30 photos predicted, all right even at 0.55. Class 1 ("shirt"): 30 predicted, wrong
    # below 0.9. Class 2: only 5 predicted, too few to pick from: it keeps the global threshold.
    rng = np.random.default_rng(0)
    shoes = rng.uniform(0.55, 0.99, 30)
    shirts = np.concatenate([rng.uniform(0.9, 0.99, 20), rng.uniform(0.6, 0.89, 10)])
    few = np.full(5, 0.95)
    confidences = np.concatenate([shoes, shirts, few])
    predicted = [0] * 30 + [1] * 30 + [2] * 5
    truth = np.array([0] * 30 + [1] * 20 + [0] * 10 + [2] * 5)
    probabilities = probabilities_for(confidences=list(confidences), predicted=predicted)
    one = auto_filing_threshold(probabilities=probabilities, y=truth, target_precision=0.97)

    per_class = class_thresholds(
        probabilities=probabilities,
        y=truth,
        class_names=["shoes", "shirt", "hat"],
        global_threshold=one["suggested_threshold"],
        target_precision=0.97,
    )

    rows = per_class["class_thresholds"]
    shoes_row, shirt_row, hat_row = rows["shoes"], rows["shirt"], rows["hat"]
    assert shoes_row["own"] and shoes_row["threshold"] == pytest.approx(shoes.min())
    assert shoes_row["coverage"] == 1.0 and shoes_row["precision"] == 1.0
    assert shirt_row["own"] and shirt_row["threshold"] == pytest.approx(shirts[:20].min())
    assert not hat_row["own"] and hat_row["threshold"] == one["suggested_threshold"]
    # One threshold must stop above the shirts' mistakes for everyone; per category the shoes file too.
    assert per_class["class_threshold_coverage"] > one["threshold_coverage"]
    assert per_class["class_threshold_precision"] >= 0.97
