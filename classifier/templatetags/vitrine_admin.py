"""The admin index's dashboard panel: {% load vitrine_admin %}{% vitrine_dashboard %}; the retrain buttons'
last measured times: {% retrain_last_times as times %}."""

from datetime import timedelta

from django import template
from django.utils import timezone

from classifier.admin.display import report_headline
from classifier.ml.formats import format_duration
from classifier.selectors import dashboard_figures, training_run_last_seconds
from classifier.services.drift import DriftDay, drift_days

register = template.Library()

DRIFT_DAYS = 14
# The drift chart's drawing area in SVG units; shares 0-100 % go bottom to top.
CHART_WIDTH, CHART_HEIGHT = 560, 120
CHART_COLOURS = ("#2a7ae2", "#d9534f", "#5cb85c", "#8e44ad")


def _drift_chart(days: list[DriftDay]) -> list[dict]:
    """One line per model version: its daily auto-filed share, and its validation figure as a dashed line."""
    if not days:
        return []
    first = min(day.day for day in days)
    step = CHART_WIDTH / max(1, DRIFT_DAYS - 1)
    lines: dict[int, dict] = {}
    for day in days:
        line = lines.setdefault(
            day.model_version.pk,
            {
                "name": day.model_version.name,
                "colour": CHART_COLOURS[len(lines) % len(CHART_COLOURS)],
                "points": [],
                "validation_y": (
                    None if day.validation_share is None else CHART_HEIGHT * (1 - day.validation_share)
                ),
            },
        )
        x = (day.day - first).days * step
        line["points"].append(f"{x:.1f},{CHART_HEIGHT * (1 - day.auto_filed_share):.1f}")
    return [{**line, "points": " ".join(line["points"])} for line in lines.values()]


@register.inclusion_tag("vitrine/dashboard.html", takes_context=True)
def vitrine_dashboard(context: template.Context) -> dict:
    figures = dashboard_figures()
    report = figures["active_report"]
    drift = drift_days(days=DRIFT_DAYS)
    # Today's or yesterday's: an older drift is history, in the table.
    recent = timezone.localdate() - timedelta(days=1)
    drifting = [day for day in drift if day.is_drifting and day.day >= recent]
    return {
        **figures,
        "active_headline": report_headline(report) if report is not None else [],
        "drift": drift,
        "drift_banner": drifting[-1] if drifting else None,
        "drift_chart": _drift_chart(drift),
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "perms": context.get("perms"),
        "request": context.get("request"),
    }


@register.simple_tag
def retrain_last_times() -> dict[str, str]:
    """How long the last successful full and quick retrain took, e.g. {"full": "21m05s"}; none yet: absent."""
    return {
        kind: format_duration(seconds)
        for kind, seconds in training_run_last_seconds().items()
        if seconds is not None
    }
