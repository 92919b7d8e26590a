"""How the admin shows the classifier's figures: percentages, durations, progress and comparisons.

Selectors return data; everything that turns it into text for a page or its live JSON lives here.
"""

from dataclasses import dataclass

from django.utils.translation import gettext

from classifier.ml.formats import format_duration
from classifier.models import BulkJob, ModelVersion, TrainingRun
from classifier.selectors import JOB_IN_PROGRESS, RUN_IN_PROGRESS, ModelVersionReport, model_version_report

MISSING = "—"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def duration(seconds: float | None) -> str:
    return MISSING if seconds is None else format_duration(seconds)


def report_headline(report: ModelVersionReport) -> list[tuple[str, str]]:
    return [
        (gettext("Test accuracy"), percent(report.accuracy)),
        (gettext("Macro F1"), percent(report.macro_f1)),
        (gettext("Validation accuracy"), percent(report.val_accuracy)),
        (
            gettext("Test photos"),
            MISSING if report.images_evaluated is None else str(report.images_evaluated),
        ),
    ]


def report_threshold_text(report: ModelVersionReport) -> dict[str, str]:
    return {
        "suggested": percent(report.suggested_threshold),
        "precision": percent(report.threshold_precision),
        "coverage": percent(report.threshold_coverage),
    }


@dataclass(frozen=True)
class ComparedFigure:
    label: str
    values: list[str]
    # Index of the version with the better value, when the figure is one where higher is better.
    best: int | None = None


def _best(values: list[float | None]) -> int | None:
    known = [(value, index) for index, value in enumerate(values) if value is not None]
    if len(known) < 2 or len({value for value, _ in known}) == 1:
        return None
    return max(known)[1]


def model_versions_compare(*, model_versions: list[ModelVersion]) -> list[ComparedFigure]:
    """Side-by-side figures of the versions: headline numbers, then F1 per category (of any version)."""
    reports = [model_version_report(model_version=version) for version in model_versions]
    figures = [
        ComparedFigure(gettext("Architecture"), [version.architecture for version in model_versions]),
        ComparedFigure(
            gettext("Created"), [f"{version.created_at:%Y-%m-%d %H:%M}" for version in model_versions]
        ),
        ComparedFigure(
            gettext("Active"),
            [gettext("yes") if version.is_active else gettext("no") for version in model_versions],
        ),
        ComparedFigure(gettext("Categories"), [str(len(version.class_names)) for version in model_versions]),
        ComparedFigure(
            gettext("Trained on"),
            [
                gettext("%(train)s / %(val)s / %(test)s (train / validation / test)")
                % {split: report.data.get(split, MISSING) for split in ("train", "val", "test")}
                for report in reports
            ],
        ),
        ComparedFigure(
            gettext("Threshold in use"), [percent(version.threshold) for version in model_versions]
        ),
    ]
    for label, attribute in (
        (gettext("Test accuracy"), "accuracy"),
        (gettext("Macro F1"), "macro_f1"),
        (gettext("Validation accuracy"), "val_accuracy"),
        (gettext("Suggested threshold"), "suggested_threshold"),
        (gettext("Precision at that threshold"), "threshold_precision"),
        (gettext("Filed automatically at that threshold"), "threshold_coverage"),
    ):
        values = [getattr(report, attribute) for report in reports]
        # A higher threshold is not better in itself; the figures it gives are.
        best = None if attribute == "suggested_threshold" else _best(values)
        figures.append(ComparedFigure(label, [percent(value) for value in values], best))
    names = list(dict.fromkeys(name for report in reports for name in (s.name for s in report.per_class)))
    for name in names:
        scores = [{s.name: s.f1 for s in report.per_class}.get(name) for report in reports]
        label = gettext("F1 %(category)s") % {"category": name}
        figures.append(ComparedFigure(label, [percent(value) for value in scores], _best(scores)))
    return figures


def _figure(value: float | None, *, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _progress_text(*, progress: dict, epochs: int | None) -> str:
    # Before its epochs, a pretrained backbone first computes the features of every photo.
    if "photos" in progress and "epoch" not in progress:
        return gettext("%(stage)s: photo %(photo)s/%(photos)s") % {
            "stage": progress.get("stage", "features"),
            "photo": progress["photos"],
            "photos": progress["of"],
        }
    return gettext("epoch %(epoch)s/%(epochs)s") % {
        "epoch": progress.get("epoch", 0),
        "epochs": epochs or "?",
    }


def training_run_progress(*, run: TrainingRun) -> dict:
    """What the live training page shows, ready to put on the page."""
    progress = run.progress or {}
    epochs = progress.get("epochs") or run.params.get("epochs")
    finished = run.status not in RUN_IN_PROGRESS
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "finished": finished,
        "stage": progress.get("stage", ""),
        "epoch": progress.get("epoch", 0),
        "epochs": epochs,
        "progress_text": _progress_text(progress=progress, epochs=epochs),
        "loss": _figure(progress.get("loss")),
        "accuracy": percent(progress.get("accuracy")),
        "val_accuracy": percent(progress.get("val_accuracy")),
        "eta": MISSING if finished else duration(progress.get("eta_s")),
        "message": run.error or run.message,
        "cancel_requested": run.cancel_requested,
        "model_version": run.model_version.name if run.model_version_id else None,
        "model_version_id": run.model_version_id,
    }


def bulk_job_progress(*, job: BulkJob) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": job.get_status_display(),
        "finished": job.status not in JOB_IN_PROGRESS,
        "resumable": job.status in (BulkJob.Status.FAILED, BulkJob.Status.CANCELLED),
        "done": job.done,
        "total": job.total,
        "failed": job.failed,
        "progress_text": f"{job.done}/{job.total}",
        "percent": round(100 * job.done / job.total) if job.total else 100,
        "error": job.error,
    }
