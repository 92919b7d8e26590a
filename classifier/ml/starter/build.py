"""Rebuilding the starter head from clothing-small/train: features once, a linear head, calibration, OOD.

1. Every photo (and its mirror image) goes once through the frozen backbone at each compared input side; the
   pooled features are cached on disk by backbone weights, side and photo content, so a rerun computes none.
2. Settings (input side x mirror image x square root of the features x L2 strength of the head) are compared
   by out-of-fold top-1
   over FOLDS folds of train/ (a photo's fold comes from its content hash, so no photo is in two folds).
   clothing-small/validation plays no part in any choice; it is only scored at the end.
3. With the best setting: the temperature, the auto-filing threshold (on calibrated confidences) and the
   two out-of-distribution thresholds (far-off photos, unknown kinds) are fitted on the out-of-fold
   predictions; the head and the OOD statistics are then fitted on all of train/ and written to head.npz,
   the record of it all to starter.json.
"""

import hashlib
import itertools
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from classifier.ml.backbones.efficientnet_lite import backbone_available, weights_origin
from classifier.ml.calibration import apply_temperature, expected_calibration_error, fit_calibration
from classifier.ml.evaluate import TARGET_PRECISION, auto_filing_threshold, class_thresholds
from classifier.ml.formats import file_sha256
from classifier.ml.ood import DEFAULT_DIMENSIONS, OodModel, fit_ood
from classifier.ml.preprocess import open_image, to_array
from classifier.ml.starter import (
    BACKBONE_VARIANT,
    HEAD_FILE,
    SUMMARY_FILE,
    StarterUnavailable,
)
from classifier.ml.starter.assemble import OOD_PREFIX, starter_backbone
from classifier.ml.starter.data import (
    DATASET_LICENCE,
    DATASET_NAME,
    DATASET_SOURCE,
    Photo,
    StarterData,
    load_starter_data,
)

SEED = 0
FOLDS = 5
# 224 px was compared too, in development: 1 pp lower out-of-fold top-1 than 260 (raw features, mirror mean).
SIDES = (260, 300)
# none: the photo only; average: the head learns and serves on the mean of photo and mirror-image features.
MIRROR_MODES = ("none", "average")
# sqrt: power normalisation, which makes pooled activations more Gaussian (for the head and the OOD score).
FEATURE_TRANSFORMS = ("raw", "sqrt")
L2_STRENGTHS = (1e-2, 3e-2, 1e-1)
# Settings whose out-of-fold top-1 lies this close to the best one's are tied (9 photos of 3,068). A plain
# argmax flipped between two CPUs: float32 features differ in their last bits from one CPU to another, which
# moved one out-of-fold photo, and settings a photo apart then scored 87.1 % and 89.7 % on validation.
ACCURACY_TIE = 0.003
# Among the tied ones the lowest out-of-fold log loss (continuous, not a count of photos) wins; losses this
# close to it count as equal too, and of those the smaller photo side (cheaper to serve) wins, then the loss.
LOG_LOSS_TIE = 0.001
# The OOD threshold keeps the first of these shares of out-of-fold known photos whose check costs at most
# MAX_OOD_COVERAGE_COST of out-of-fold auto-filing coverage (the goal allows 3 pp; this leaves a margin).
OOD_KEEP_RATES = (0.95, 0.96, 0.97, 0.98, 0.99)
MAX_OOD_COVERAGE_COST = 0.02
# The kind check then keeps the least of these shares of out-of-fold known photos at which the two checks
# together cost at most MAX_CHECKS_COVERAGE_COST of out-of-fold coverage at the threshold.
KIND_KEEP_RATES = tuple(round(0.70 + 0.01 * step, 2) for step in range(31))
MAX_CHECKS_COVERAGE_COST = 0.05
FEATURE_CHUNK = 32
# Written every this many chunks while features are computed, so an interrupted build keeps its work.
CACHE_SAVE_CHUNKS = 20
LBFGS_MEMORY = 10
LBFGS_MAX_ITERATIONS = 500
LBFGS_TOLERANCE = 1e-6
# Stop when an iteration lowers the loss by less than this share of it.
LBFGS_RELATIVE_DECREASE = 1e-8
ARMIJO = 1e-4
COMMAND = "python -m classifier.ml.starter build --datasets-dir ../shared/datasets"

Report = Callable[[str], None]


def fold_of(photo: Photo, *, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{photo.digest}".encode()).hexdigest(), 16) % FOLDS


class FeatureCache:
    """Pooled features of each photo and its mirror image, (2, D) float32 by content hash, one file per
    backbone (weights hash) and input side."""

    def __init__(self, *, cache_dir: pathlib.Path, side: int) -> None:
        weights = weights_origin(BACKBONE_VARIANT).sha256[:16]
        self.path = pathlib.Path(cache_dir) / f"effnet-{BACKBONE_VARIANT}-{weights}-{side}px.npz"
        self.entries: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as stored:
                self.entries = dict(zip(stored["digests"].tolist(), stored["features"], strict=True))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial.npz")
        digests = sorted(self.entries)
        np.savez(partial, digests=np.array(digests), features=np.stack([self.entries[d] for d in digests]))
        os.replace(partial, self.path)


def _decode(photo: Photo, *, side: int) -> np.ndarray:
    return to_array(open_image(photo.path), input_shape=(side, side, 3), style="photo")


def photo_features(
    photos: Sequence[Photo], *, side: int, cache_dir: pathlib.Path, report: Report
) -> tuple[np.ndarray, int]:
    """(N, 2, D) features of the photos and their mirror images, and how many photos had to be computed."""
    cache = FeatureCache(cache_dir=cache_dir, side=side)
    missing = list({photo.digest: photo for photo in photos if photo.digest not in cache.entries}.values())
    if missing:
        backbone = starter_backbone(side)
        features = tf.function(
            lambda pixels: backbone(pixels, training=False),
            input_signature=[tf.TensorSpec((None, side, side, 3), tf.float32)],
        )
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=2) as pool:
            for number, start in enumerate(range(0, len(missing), FEATURE_CHUNK), start=1):
                chunk = missing[start : start + FEATURE_CHUNK]
                pixels = np.stack(list(pool.map(lambda photo: _decode(photo, side=side), chunk)))
                both = np.asarray(features(np.concatenate([pixels, pixels[:, :, ::-1]]).astype(np.float32)))
                for index, photo in enumerate(chunk):
                    cache.entries[photo.digest] = np.stack([both[index], both[len(chunk) + index]])
                if number % CACHE_SAVE_CHUNKS == 0 or start + len(chunk) == len(missing):
                    cache.save()
                    done = start + len(chunk)
                    elapsed = time.monotonic() - started
                    report(f"features {side}px: {done}/{len(missing)} photos, {elapsed:.0f}s")
    return np.stack([cache.entries[photo.digest] for photo in photos]).astype(np.float32), len(missing)


def _lbfgs(
    loss_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray
) -> np.ndarray:
    """Minimises a smooth convex function from `start`: limited-memory BFGS, backtracking line search."""
    x = start
    loss, gradient = loss_and_gradient(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(LBFGS_MAX_ITERATIONS):
        direction = -gradient
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * (s @ direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            direction = direction * (s @ y) / (y @ y)
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            direction = direction + s * (alpha - rho * (y @ direction))
        slope = gradient @ direction
        if slope >= 0:
            # Not a descent direction (numerical noise): start over from the gradient.
            steps, direction, slope = [], -gradient, -(gradient @ gradient)
        step = 1.0 if steps else 1.0 / max(1.0, float(np.abs(gradient).max()))
        while True:
            candidate = x + step * direction
            new_loss, new_gradient = loss_and_gradient(candidate)
            if new_loss <= loss + ARMIJO * step * slope or step < 1e-12:
                break
            step /= 2
        s, y = candidate - x, new_gradient - gradient
        if s @ y > 1e-12:
            steps = [*steps[-(LBFGS_MEMORY - 1) :], (s, y, 1.0 / (s @ y))]
        converged = loss - new_loss <= LBFGS_RELATIVE_DECREASE * max(1.0, abs(new_loss))
        x, loss, gradient = candidate, new_loss, new_gradient
        if np.abs(gradient).max() < LBFGS_TOLERANCE or converged:
            break
    return x


def fit_linear_head(
    features: np.ndarray, labels: np.ndarray, *, num_classes: int, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression (weights (D, C), bias (C,)) minimising mean cross-entropy + l2 / 2 * |W|^2 on
    standardised features; returned for raw features. Deterministic: zero start, full-batch L-BFGS."""
    features = np.asarray(features, dtype=np.float64)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    targets = np.eye(num_classes)[labels]
    dims = x.shape[1]

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[: dims * num_classes].reshape(dims, num_classes), theta[dims * num_classes :]
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_normaliser = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        probabilities = np.exp(logits - log_normaliser)
        loss = float(
            (log_normaliser[:, 0] - (logits * targets).sum(axis=1)).mean() + l2 / 2 * (weights**2).sum()
        )
        error = (probabilities - targets) / len(x)
        gradient = np.concatenate([(x.T @ error + l2 * weights).ravel(), error.sum(axis=0)])
        return loss, gradient

    theta = _lbfgs(loss_and_gradient, np.zeros((dims + 1) * num_classes))
    weights, bias = theta[: dims * num_classes].reshape(dims, num_classes), theta[dims * num_classes :]
    return (weights / scale[:, np.newaxis]).astype(np.float32), (bias - (mean / scale) @ weights).astype(
        np.float32
    )


def head_probabilities(features: np.ndarray, *, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = np.asarray(features, dtype=np.float64) @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def served_features(views: np.ndarray, *, mirror: str, transform: str) -> np.ndarray:
    """The features the served model's head and OOD score read, from (N, 2, D) photo + mirror features."""
    features = views[:, 0] if mirror == "none" else views.mean(axis=1)
    return np.sqrt(features) if transform == "sqrt" else features


def out_of_fold(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, *, num_classes: int, l2: float
) -> np.ndarray:
    """Each train photo's probabilities from a head fitted on the other folds."""
    probabilities = np.zeros((len(labels), num_classes))
    for fold in range(FOLDS):
        held = folds == fold
        weights, bias = fit_linear_head(features[~held], labels[~held], num_classes=num_classes, l2=l2)
        probabilities[held] = head_probabilities(features[held], weights=weights, bias=bias)
    return probabilities


def _log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def _filed(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    threshold: float | np.ndarray,
    familiar: np.ndarray | None = None,
) -> dict:
    """Coverage and precision of filing at `threshold`: one for all, or one per predicted class."""
    predicted = probabilities.argmax(axis=1)
    filed = probabilities.max(axis=1) >= np.broadcast_to(threshold, probabilities.shape[1:])[predicted]
    if familiar is not None:
        filed &= familiar
    correct = predicted == labels
    return {
        "coverage": float(filed.mean()),
        "precision": float(correct[filed].mean()) if filed.any() else 1.0,
    }


def calibrated_ood(
    features: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    *,
    oof_calibrated: np.ndarray,
    threshold: float | np.ndarray,
    kind_check: bool = True,
    max_checks_cost: float = MAX_CHECKS_COVERAGE_COST,
) -> tuple[OodModel, dict]:
    """The OOD statistics of all these features with both thresholds picked on out-of-fold scores (see
    OOD_KEEP_RATES and KIND_KEEP_RATES); and out-of-fold coverage and precision at `threshold` with them.
    Without kind_check the statistics flag far-off photos only."""
    oof_scores, oof_kind_scores = np.zeros(len(labels)), np.zeros(len(labels))
    for fold in range(FOLDS):
        held = folds == fold
        fold_model = fit_ood(features[~held], labels[~held])
        oof_scores[held] = fold_model.scores(features[held])
        oof_kind_scores[held] = fold_model.kind_scores(features[held])
    statistics = fit_ood(features, labels)
    coverage = _filed(oof_calibrated, labels, threshold=threshold)["coverage"]
    for keep_rate in OOD_KEEP_RATES:
        ood = statistics.with_threshold(oof_scores, keep_rate=keep_rate)
        familiar = ~ood.is_unfamiliar(oof_scores)
        checked = _filed(oof_calibrated, labels, threshold=threshold, familiar=familiar)
        if coverage - checked["coverage"] <= MAX_OOD_COVERAGE_COST:
            break
    if not kind_check:
        return ood, checked
    for kind_keep_rate in KIND_KEEP_RATES:
        both = ood.with_kind_threshold(oof_kind_scores, keep_rate=kind_keep_rate)
        passed = familiar & ~both.is_unknown_kind(oof_kind_scores)
        checked = _filed(oof_calibrated, labels, threshold=threshold, familiar=passed)
        if coverage - checked["coverage"] <= max_checks_cost:
            break
    return both, checked


def chosen_setting(settings: list[dict]) -> dict:
    """The setting the starter serves: of those within ACCURACY_TIE of the best out-of-fold top-1, the
    lowest out-of-fold log loss, where losses within LOG_LOSS_TIE of it go to the smaller side."""
    best_accuracy = max(setting["oof_accuracy"] for setting in settings)
    tied = [setting for setting in settings if setting["oof_accuracy"] >= best_accuracy - ACCURACY_TIE]
    best_loss = min(setting["oof_log_loss"] for setting in tied)
    tied = [setting for setting in tied if setting["oof_log_loss"] <= best_loss + LOG_LOSS_TIE]
    return min(tied, key=lambda setting: (setting["side"], setting["oof_log_loss"]))


def build_starter(
    *,
    datasets_dir: pathlib.Path,
    out_dir: pathlib.Path,
    cache_dir: pathlib.Path,
    seed: int = SEED,
    sides: Sequence[int] = SIDES,
    report: Report = print,
) -> dict:
    """Rebuilds head.npz and starter.json in out_dir from clothing-small in datasets_dir; returns the summary
    (what starter.json holds) plus "timings" (seconds; not written, so reruns give the same files)."""
    if not backbone_available(BACKBONE_VARIANT):
        raise StarterUnavailable("the EfficientNet-Lite2 weights are not installed (see requirements.txt)")
    started = time.monotonic()
    data: StarterData = load_starter_data(datasets_dir)
    num_classes = len(data.class_names)
    y_train = np.array([photo.label for photo in data.train])
    y_val = np.array([photo.label for photo in data.validation])
    folds = np.array([fold_of(photo, seed=seed) for photo in data.train])
    report(
        f"{DATASET_NAME}: {len(data.train)} train + {len(data.validation)} validation photos, "
        f"{num_classes} classes"
    )

    feature_seconds, computed = 0.0, 0
    train_views, val_views = {}, {}
    for side in sides:
        side_started = time.monotonic()
        train_views[side], new_train = photo_features(
            data.train, side=side, cache_dir=cache_dir, report=report
        )
        val_views[side], new_val = photo_features(
            data.validation, side=side, cache_dir=cache_dir, report=report
        )
        feature_seconds += time.monotonic() - side_started
        computed += new_train + new_val

    fitting_started = time.monotonic()
    settings = []
    for side, mirror, transform, l2 in itertools.product(
        sides, MIRROR_MODES, FEATURE_TRANSFORMS, L2_STRENGTHS
    ):
        features = served_features(train_views[side], mirror=mirror, transform=transform)
        oof = out_of_fold(features, y_train, folds, num_classes=num_classes, l2=l2)
        accuracy = float((oof.argmax(axis=1) == y_train).mean())
        setting = {"side": side, "mirror": mirror, "transform": transform, "l2": l2}
        settings.append(
            {**setting, "oof_accuracy": accuracy, "oof_log_loss": _log_loss(oof, y_train), "_oof": oof}
        )
        report(f"  {setting}: out-of-fold top-1 {accuracy:.4f}")
    best = chosen_setting(settings)
    side, mirror, transform, l2, oof = (best[key] for key in ("side", "mirror", "transform", "l2", "_oof"))
    train_features = served_features(train_views[side], mirror=mirror, transform=transform)
    val_features = served_features(val_views[side], mirror=mirror, transform=transform)

    fitted_on = (
        f"out-of-fold predictions on {DATASET_NAME}/train ({FOLDS} folds by content hash, seed {seed})"
    )
    calibration = fit_calibration(probabilities=oof, y=y_train, fitted_on=fitted_on)
    temperature = calibration["temperature"]
    oof_calibrated = apply_temperature(oof, temperature=temperature)
    threshold = auto_filing_threshold(
        probabilities=oof_calibrated, y=y_train, target_precision=TARGET_PRECISION
    )

    oof_without = _filed(oof_calibrated, y_train, threshold=threshold["suggested_threshold"])
    ood, oof_with = calibrated_ood(
        train_features,
        y_train,
        folds,
        oof_calibrated=oof_calibrated,
        threshold=threshold["suggested_threshold"],
    )

    weights, bias = fit_linear_head(train_features, y_train, num_classes=num_classes, l2=l2)
    fitting_seconds = time.monotonic() - fitting_started

    val_raw = head_probabilities(val_features, weights=weights, bias=bias)
    val_calibrated = apply_temperature(val_raw, temperature=temperature)
    val_unknown_kind = ood.is_unknown_kind(ood.kind_scores(val_features))
    val_familiar = ~ood.is_unfamiliar(ood.scores(val_features)) & ~val_unknown_kind
    cut = threshold["suggested_threshold"]
    without_ood = _filed(val_calibrated, y_val, threshold=cut)
    with_ood = _filed(val_calibrated, y_val, threshold=cut, familiar=val_familiar)
    per_class = class_thresholds(
        probabilities=oof_calibrated,
        y=y_train,
        class_names=data.class_names,
        global_threshold=cut,
        target_precision=TARGET_PRECISION,
    )
    cuts = np.array([per_class["class_thresholds"][name]["threshold"] for name in data.class_names])
    per_class_without_ood = _filed(val_calibrated, y_val, threshold=cuts)
    per_class_with_ood = _filed(val_calibrated, y_val, threshold=cuts, familiar=val_familiar)

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / HEAD_FILE, head_weights=weights, head_bias=bias, **ood.arrays(prefix=OOD_PREFIX))
    origin = weights_origin(BACKBONE_VARIANT)
    evaluated_on = f"{DATASET_NAME}/validation ({len(y_val)} photos, never used to fit or choose anything)"
    summary = {
        "command": COMMAND,
        "seed": seed,
        "class_names": data.class_names,
        "image_side": side,
        "mirror_average": mirror != "none",
        "square_root_features": transform == "sqrt",
        "head": {
            "file": HEAD_FILE,
            "sha256": file_sha256(out_dir / HEAD_FILE),
            "kind": "softmax regression on the backbone's pooled features",
            "mirror": mirror,
            "transform": transform,
            "l2": l2,
        },
        "backbone": {"variant": BACKBONE_VARIANT, "image_size": side, **origin.as_dict()},
        "data": {
            "name": DATASET_NAME,
            "source": DATASET_SOURCE,
            "licence": DATASET_LICENCE,
            "fingerprint": data.fingerprint,
            "fingerprint_of": "sha256 over the sorted 'split class sha256' lines of train/ and validation/",
            "train": len(data.train),
            "validation": len(data.validation),
            "skipped": data.skipped,
        },
        "selection": {
            "by": f"out-of-fold top-1 on {DATASET_NAME}/train ({FOLDS} folds by content hash, seed {seed}), "
            f"ties within {ACCURACY_TIE:g} broken by out-of-fold log loss "
            f"(within {LOG_LOSS_TIE:g}: the smaller side)",
            "compared": len(settings),
            "settings": [{key: value for key, value in s.items() if key != "_oof"} for s in settings],
            "chosen": {"side": side, "mirror": mirror, "transform": transform, "l2": l2},
        },
        "calibration": calibration,
        "ood": {
            "score": "squared Mahalanobis distance to the nearest category mean, shared covariance in a "
            f"{DEFAULT_DIMENSIONS}-dimension PCA subspace plus isotropic residual",
            "dimensions": DEFAULT_DIMENSIONS,
            "keep_rate": ood.keep_rate,
            "keep_rate_rule": f"the first of {list(OOD_KEEP_RATES)} whose check costs at most "
            f"{MAX_OOD_COVERAGE_COST:.0%} of out-of-fold coverage at the threshold",
            "threshold": ood.threshold,
            "kind_score": "relative Mahalanobis distance (Ren et al., 2021): to the nearest category minus "
            "to one Gaussian of all training features, in the same subspace",
            "kind_keep_rate": ood.kind_keep_rate,
            "kind_keep_rate_rule": f"the least of {KIND_KEEP_RATES[0]}..{KIND_KEEP_RATES[-1]} at which both "
            f"checks together cost at most {MAX_CHECKS_COVERAGE_COST:.0%} of out-of-fold coverage at the "
            "threshold",
            "kind_threshold": ood.kind_threshold,
            "fitted_on": f"{DATASET_NAME}/train features",
            "threshold_fitted_on": fitted_on,
        },
        "metrics": {
            "evaluated_on": evaluated_on,
            "test_accuracy": float((val_raw.argmax(axis=1) == y_val).mean()),
            "test_images": len(y_val),
            "test_ece_before": expected_calibration_error(val_raw, y_val),
            "test_ece_after": expected_calibration_error(val_calibrated, y_val),
            "suggested_threshold": cut,
            "threshold_picked_on": f"calibrated {fitted_on}",
            "threshold_target_precision": TARGET_PRECISION,
            "threshold_coverage": without_ood["coverage"],
            "threshold_precision": without_ood["precision"],
            "threshold_coverage_with_ood": with_ood["coverage"],
            "threshold_precision_with_ood": with_ood["precision"],
            "test_unfamiliar_share": float((~val_familiar).mean()),
            "test_unknown_kind_share": float(val_unknown_kind.mean()),
            # Picked on the out-of-fold predictions like the threshold; each category's coverage there.
            "class_thresholds": per_class["class_thresholds"],
            "class_threshold_coverage": per_class_without_ood["coverage"],
            "class_threshold_precision": per_class_without_ood["precision"],
            "class_threshold_coverage_with_ood": per_class_with_ood["coverage"],
            "class_threshold_precision_with_ood": per_class_with_ood["precision"],
            "cross_validated": {
                "accuracy": best["oof_accuracy"],
                "threshold_coverage": oof_without["coverage"],
                "threshold_precision": oof_without["precision"],
                "threshold_coverage_with_ood": oof_with["coverage"],
                "threshold_precision_with_ood": oof_with["precision"],
                "class_threshold_coverage": per_class["class_threshold_coverage"],
                "class_threshold_precision": per_class["class_threshold_precision"],
            },
        },
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    timings = {
        "features_s": round(feature_seconds, 1),
        "photos_computed": computed,
        "fitting_s": round(fitting_seconds, 1),
        "total_s": round(time.monotonic() - started, 1),
    }
    return {**summary, "timings": timings}
