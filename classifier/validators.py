"""Bounds on what decides filing: a confidence threshold, and the figures the admin shows from a version's
metrics. Each check says what is wrong in words, for the admin, model_import and the settings alike."""

import math

from django.core.exceptions import ValidationError
from django.utils.translation import gettext

# The figures the admin and the dashboard format as numbers; other metrics (words, notes) are shown as given.
NUMERIC_METRICS = (
    "test_accuracy",
    "test_macro_f1",
    "val_accuracy",
    "test_images",
    "suggested_threshold",
    "threshold_precision",
    "threshold_coverage",
)
NUMERIC_METRIC_SECTIONS = {
    "calibration": ("temperature", "ece_before", "ece_after"),
    "ood": ("threshold", "keep_rate"),
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def threshold_problem(value: object) -> str | None:
    """Why `value` cannot be a confidence threshold (above 0, at most 1), or None when it can."""
    if not _is_number(value):
        return gettext("must be a number above 0 and at most 1, not %(value)r") % {"value": value}
    if not 0 < value <= 1:
        return gettext("must be above 0 and at most 1 (a confidence), not %(value)s") % {"value": value}
    return None


def validate_threshold(value: float) -> None:
    problem = threshold_problem(value)
    if problem is not None:
        raise ValidationError(
            gettext("The threshold %(problem)s.") % {"problem": problem}, code="threshold_out_of_bounds"
        )


def metrics_problem(metrics: object) -> str | None:
    """Why `metrics` cannot be a version's metrics (a figure that is not a number), or None when they can."""
    if not isinstance(metrics, dict):
        return f"not an object of named figures ({type(metrics).__name__})"
    figures = [(name, metrics.get(name)) for name in NUMERIC_METRICS]
    for section, names in NUMERIC_METRIC_SECTIONS.items():
        values = metrics.get(section) or {}
        if not isinstance(values, dict):
            return f"{section} is not an object of named figures"
        figures += [(f"{section}.{name}", values.get(name)) for name in names]
    for name, value in figures:
        if value is not None and not _is_number(value):
            return f"{name} is {value!r}, not a number"
    return None
