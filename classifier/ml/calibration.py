"""Confidence calibration: temperature scaling (Guo et al., 2017) and the expected calibration error.

A model's top probability is "confidence"; calibrated, 90 % confidence means right 9 times in 10, so the
auto-filing threshold means what it says. Temperature scaling divides the log-probabilities by one number T
fitted on held-out photos (T > 1 softens an over-confident model); it never changes which category is best.
numpy only, deterministic.
"""

import math

import numpy as np

ECE_BINS = 15
# log T is searched in this range (T from about 0.02 to 50); golden-section steps until it stops moving.
LOG_TEMPERATURE_RANGE = (-4.0, 4.0)
GOLDEN_SECTION_STEPS = 80
# Probabilities are clipped here before the log, so a hard 0 stays finite.
MIN_PROBABILITY = 1e-12


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), MIN_PROBABILITY, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def apply_temperature(probabilities: np.ndarray, *, temperature: float) -> np.ndarray:
    """softmax(log p / T); T = 1 returns the probabilities unchanged."""
    if temperature == 1.0:
        return np.asarray(probabilities)
    return softmax(log_probabilities(probabilities) / temperature).astype(np.float32)


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, *, temperature: float) -> float:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(shifted).sum(axis=1))
    return float((log_normaliser - shifted[np.arange(len(y)), y]).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the negative log-likelihood of softmax(logits / T) on (logits, y).

    The likelihood is convex in 1 / T, so it has one minimum in log T, found by golden-section search.
    Logits may be log-probabilities: softmax ignores a constant per row.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    low, high = LOG_TEMPERATURE_RANGE
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    left, right = high - ratio * (high - low), low + ratio * (high - low)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, y, temperature=math.exp(log_t))

    left_loss, right_loss = loss(left), loss(right)
    for _ in range(GOLDEN_SECTION_STEPS):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return math.exp((low + high) / 2.0)


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Support-weighted mean |accuracy - confidence| over `bins` equal-width confidence bins."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 0.0
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    # Bin b holds confidences in (b / bins, (b + 1) / bins]; a confidence of exactly 0 goes to the first.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(y))


def fit_calibration(*, probabilities: np.ndarray, y: np.ndarray, fitted_on: str) -> dict:
    """Temperature fitted on held-out (probabilities, y), with the ECE there before and after.

    The result is what an artifact's metadata keeps under "calibration".
    """
    temperature = fit_temperature(log_probabilities(probabilities), y)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(probabilities, y),
        "ece_after": expected_calibration_error(apply_temperature(probabilities, temperature=temperature), y),
        "ece_bins": ECE_BINS,
        "fitted_on": fitted_on,
    }
