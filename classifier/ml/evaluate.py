"""What people read after a training: per-category report, confusion matrix, curves and the worst mistakes."""

import json
import pathlib

import keras
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from classifier.ml.formats import (
    CONFUSION_JSON,
    CONFUSION_PNG,
    CURVES_PNG,
    MISCLASSIFIED_PNG,
    REPORT_JSON,
    REPORT_TEXT,
)
from classifier.ml.serving import compiled_inference, split_outputs

MISCLASSIFIED_SHOWN = 25
PREDICT_CHUNK = 256
# Above this many categories the matrix cells are too small to print counts in.
ANNOTATED_CONFUSION_MAX_CLASSES = 20
# Share of automatically filed products that must land in the right category.
TARGET_PRECISION = 0.97
# A category gets a threshold of its own only where this many held-out photos were predicted as it.
CLASS_THRESHOLD_LEAST_PREDICTED = 20


def predict_probabilities(*, model: keras.Model, x: np.ndarray, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Class probabilities for uint8 pixels, in chunks through the same compiled call serving uses."""
    num_classes = model.outputs[0].shape[-1]
    if len(x) == 0:
        return np.zeros((0, num_classes), dtype=np.float32)
    probabilities = compiled_inference(model=model, input_shape=x.shape[1:])
    # A model that also outputs its features (the starter model) gives its probabilities first.
    parts = [
        split_outputs(probabilities(x[start : start + chunk].astype(np.float32)))[0].astype(np.float32)
        for start in range(0, len(x), chunk)
    ]
    return np.concatenate(parts)


def confusion_matrix(*, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true categories, columns predicted ones."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(*, matrix: np.ndarray, class_names: list[str]) -> dict:
    """Per-category precision, recall, F1 and support, with macro and support-weighted averages."""
    true_positives = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    # A category never predicted (or never present) scores 0 rather than NaN, as scikit-learn does.
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    total = support.sum()
    weights = support / total if total else np.zeros_like(support)
    return {
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "accuracy": float(true_positives.sum() / total) if total else 0.0,
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": int(total),
        },
        "weighted_avg": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
            "support": int(total),
        },
    }


def format_report(report: dict) -> str:
    """The report as an aligned text table, like scikit-learn's."""
    width = max(len(name) for name in [*report["per_class"], "weighted avg"])

    def row(name: str, scores: dict) -> str:
        return (
            f"{name:>{width}}  {scores['precision']:>9.4f}  {scores['recall']:>9.4f}  "
            f"{scores['f1']:>9.4f}  {scores['support']:>9d}"
        )

    total = report["macro_avg"]["support"]
    return "\n".join(
        [
            f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}",
            "",
            *(row(name, scores) for name, scores in report["per_class"].items()),
            "",
            f"{'accuracy':>{width}}  {'':>9}  {'':>9}  {report['accuracy']:>9.4f}  {total:>9d}",
            row("macro avg", report["macro_avg"]),
            row("weighted avg", report["weighted_avg"]),
            "",
        ]
    )


def _cuts(confidence: np.ndarray, correct: np.ndarray, *, target_precision: float) -> tuple:
    """Confidence and correctness sorted from most confident, the precision of each prefix, and the indices
    where cutting reaches target_precision (equal confidences are filed together: only the last of a run of
    ties is a real cut)."""
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    cut = np.append(confidence[1:] < confidence[:-1], True) if len(correct) else np.zeros(0, dtype=bool)
    return confidence, correct, precision, np.flatnonzero(cut & (precision >= target_precision))


def auto_filing_threshold(
    *, probabilities: np.ndarray, y: np.ndarray, target_precision: float = TARGET_PRECISION
) -> dict:
    """The lowest confidence threshold at which the labels filed automatically reach target_precision.

    A product is filed automatically when its top confidence is at or above the threshold. Returns the
    threshold, the precision of the labels filed at it and its coverage (share of products filed). When no
    threshold reaches the target, the threshold is 1.0: nothing is filed automatically (coverage 0 and, by
    the usual convention, precision 1).
    """
    y = np.asarray(y, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(y) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == y if len(y) else np.zeros(0, dtype=bool)
    confidence, correct, precision, reaching = _cuts(confidence, correct, target_precision=target_precision)
    if len(reaching) == 0:
        at_one = int((confidence >= 1.0).sum())
        return {
            "suggested_threshold": 1.0,
            "threshold_precision": float(correct[:at_one].mean()) if at_one else 1.0,
            "threshold_coverage": at_one / len(y) if len(y) else 0.0,
            "threshold_target_precision": target_precision,
        }
    last = reaching[-1]
    return {
        "suggested_threshold": float(confidence[last]),
        "threshold_precision": float(precision[last]),
        "threshold_coverage": float((last + 1) / len(y)),
        "threshold_target_precision": target_precision,
    }


def class_thresholds(
    *,
    probabilities: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    global_threshold: float,
    target_precision: float = TARGET_PRECISION,
    least_predicted: int = CLASS_THRESHOLD_LEAST_PREDICTED,
) -> dict:
    """A threshold per category: the lowest confidence at which the photos predicted as that category reach
    target_precision, picked where at least `least_predicted` photos were predicted as it; the others keep
    global_threshold (too few to pick from). Also the coverage and precision of all of them together.
    """
    y = np.asarray(y, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    correct = predicted == y
    per_class = {}
    for index, name in enumerate(class_names):
        mine = predicted == index
        own = None
        if mine.sum() >= least_predicted:
            # 1.0 when no cut reaches the precision: nothing of this category is filed by itself.
            ordered, _, _, reaching = _cuts(
                confidence[mine], correct[mine], target_precision=target_precision
            )
            own = float(ordered[reaching[-1]]) if len(reaching) else 1.0
        threshold = global_threshold if own is None else own
        filed = mine & (confidence >= threshold)
        per_class[name] = {
            "threshold": threshold,
            "own": own is not None,
            "predicted": int(mine.sum()),
            "coverage": float(filed.sum() / mine.sum()) if mine.sum() else 0.0,
            "precision": float(correct[filed].mean()) if filed.any() else 1.0,
        }
    thresholds = np.array([per_class[name]["threshold"] for name in class_names])
    filed = confidence >= thresholds[predicted] if len(y) else np.zeros(0, dtype=bool)
    return {
        "class_thresholds": per_class,
        "class_threshold_coverage": float(filed.mean()) if len(y) else 0.0,
        "class_threshold_precision": float(correct[filed].mean()) if filed.any() else 1.0,
    }


def _plot_confusion(*, matrix: np.ndarray, class_names: list[str], path: pathlib.Path, title: str) -> None:
    size = min(20.0, max(5.0, 0.55 * len(class_names) + 2))
    figure = Figure(figsize=(size, size * 0.9), layout="constrained")
    axes = figure.add_subplot()
    row_totals = matrix.sum(axis=1, keepdims=True)
    # Colour by the share of each true category, so small categories are as readable as big ones.
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true category")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= ANNOTATED_CONFUSION_MAX_CLASSES:
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.savefig(path, dpi=100)


def _plot_curves(*, history: dict, path: pathlib.Path) -> None:
    figure = Figure(figsize=(10, 4), layout="constrained")
    for position, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, position)
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key) or []
            if values:
                axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=100)


def _plot_misclassified(
    *,
    x: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    confidence: np.ndarray,
    class_names: list[str],
    path: pathlib.Path,
) -> None:
    wrong = np.flatnonzero(y_true != y_pred)
    # The most confident mistakes first: they are the ones a threshold would not catch.
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISCLASSIFIED_SHOWN]
    if len(shown) == 0:
        figure = Figure(figsize=(4, 1.5))
        figure.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        figure.savefig(path, dpi=100)
        return
    columns = min(5, len(shown))
    rows = int(np.ceil(len(shown) / columns))
    figure = Figure(figsize=(2.4 * columns, 2.6 * rows), layout="constrained")
    for position, index in enumerate(shown, start=1):
        axes = figure.add_subplot(rows, columns, position)
        pixels = x[index]
        if pixels.shape[-1] == 1:
            axes.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axes.imshow(pixels)
        axes.set_title(
            f"{class_names[y_true[index]]} / {class_names[y_pred[index]]} ({confidence[index]:.0%})",
            fontsize=8,
        )
        axes.axis("off")
    figure.suptitle("true / predicted (confidence)")
    figure.savefig(path, dpi=100)


def evaluate(
    *,
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    out_dir: pathlib.Path,
    history: dict | None = None,
    prefix: str = "test",
    target_precision: float | None = None,
    probabilities: np.ndarray | None = None,
) -> dict:
    """Scores the model on (x, y), writes the evaluation files into out_dir, returns the headline metrics.

    probabilities: the model's answers for x when the caller already has them (from cached features).

    With target_precision, the metrics also hold the auto-filing threshold picked on (x, y) for it, with
    its precision and coverage there (auto_filing_threshold).
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y, dtype=np.int64)
    if probabilities is None:
        probabilities = predict_probabilities(model=model, x=x)
    y_pred = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1) if len(x) else np.zeros(0)
    matrix = confusion_matrix(y_true=y, y_pred=y_pred, num_classes=len(class_names))
    report = classification_report(matrix=matrix, class_names=class_names)

    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / REPORT_TEXT).write_text(format_report(report))
    (out_dir / CONFUSION_JSON).write_text(
        json.dumps(
            {"class_names": class_names, "rows": "true", "columns": "predicted", "matrix": matrix.tolist()}
        )
        + "\n"
    )
    _plot_confusion(
        matrix=matrix,
        class_names=class_names,
        path=out_dir / CONFUSION_PNG,
        title=f"{prefix}: accuracy {report['accuracy']:.2%} on {len(y)} images",
    )
    if history:
        _plot_curves(history=history, path=out_dir / CURVES_PNG)
    _plot_misclassified(
        x=x,
        y_true=y,
        y_pred=y_pred,
        confidence=confidence,
        class_names=class_names,
        path=out_dir / MISCLASSIFIED_PNG,
    )

    picked = probabilities[np.arange(len(y)), y] if len(y) else np.ones(0)
    # Plain cross-entropy (no label smoothing), comparable between architectures.
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()) if len(y) else 0.0
    metrics = {
        f"{prefix}_accuracy": report["accuracy"],
        f"{prefix}_loss": loss,
        f"{prefix}_macro_f1": report["macro_avg"]["f1"],
        f"{prefix}_images": int(len(y)),
    }
    if target_precision is not None:
        metrics.update(
            auto_filing_threshold(probabilities=probabilities, y=y, target_precision=target_precision)
        )
    if target_precision is not None and len(y):
        metrics.update(
            class_thresholds(
                probabilities=probabilities,
                y=y,
                class_names=class_names,
                global_threshold=metrics["suggested_threshold"],
                target_precision=target_precision,
            )
        )
    return metrics
