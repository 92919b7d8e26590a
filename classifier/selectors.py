"""Reads of the classifier for the admin: training and bulk job progress, version reports, the dashboard.

No TensorFlow here: a model version's figures come from the JSON files its training wrote beside the model.
"""

import json
import logging
import pathlib
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, F, Q

from catalog.models import Category, Product
from catalog.selectors import products_needing_review
from classifier.models import BulkJob, ModelActivation, ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

# Written by classifier.ml.evaluate beside each model (named here so web processes need not import Keras).
REPORT_JSON = "classification_report.json"
CONFUSION_JSON = "confusion_matrix.json"
ARTIFACT_IMAGES = {
    "curves": "curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "misclassified": "misclassified.png",
}
# Artifact files the admin may serve: the evaluation's pictures and tables, never the model itself.
SERVABLE_SUFFIXES = (".png", ".json", ".txt")
RUN_IN_PROGRESS = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
JOB_IN_PROGRESS = (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_roll_back_target() -> ModelVersion | None:
    """The version that was active before the active one took over, or None."""
    active = model_version_active()
    if active is None:
        return None
    activation = ModelActivation.objects.filter(model_version=active).select_related("previous").first()
    return activation.previous if activation is not None else None


def model_version_artifact_dir(*, model_version: ModelVersion) -> pathlib.Path:
    """The artifact directory on disk; relative paths are under VITRINE_MODELS_DIR."""
    return pathlib.Path(settings.VITRINE_MODELS_DIR) / model_version.artifact_path


def model_version_artifact_file(*, model_version: ModelVersion, name: str) -> pathlib.Path | None:
    """The named evaluation file of the version, or None unless it is a servable file inside its directory."""
    if not name or "/" in name or "\\" in name or not name.endswith(SERVABLE_SUFFIXES):
        return None
    artifact_dir = model_version_artifact_dir(model_version=model_version).resolve()
    path = (artifact_dir / name).resolve()
    if path.parent != artifact_dir or not path.is_file():
        return None
    return path


def _artifact_json(model_version: ModelVersion, name: str) -> dict | None:
    path = model_version_artifact_file(model_version=model_version, name=name)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("model version %s: cannot read %s (%s)", model_version.name, name, error)
        return None


@dataclass(frozen=True)
class ClassScores:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ModelVersionReport:
    """What a person judges a version by, from its metrics and its evaluation files (absent ones are None)."""

    accuracy: float | None
    macro_f1: float | None
    val_accuracy: float | None
    images_evaluated: int | None
    suggested_threshold: float | None
    threshold_precision: float | None
    threshold_coverage: float | None
    per_class: list[ClassScores]
    confusion_class_names: list[str]
    confusion_rows: list[tuple[str, list[int]]]
    images: dict[str, str]
    data: dict

    @property
    def headline(self) -> list[tuple[str, str]]:
        return [
            ("Test accuracy", _percent(self.accuracy)),
            ("Macro F1", _percent(self.macro_f1)),
            ("Validation accuracy", _percent(self.val_accuracy)),
            ("Test photos", "—" if self.images_evaluated is None else str(self.images_evaluated)),
        ]

    @property
    def threshold_text(self) -> dict[str, str]:
        return {
            "suggested": _percent(self.suggested_threshold),
            "precision": _percent(self.threshold_precision),
            "coverage": _percent(self.threshold_coverage),
        }


def model_version_report(*, model_version: ModelVersion) -> ModelVersionReport:
    metrics = model_version.metrics or {}
    report = _artifact_json(model_version, REPORT_JSON) or {}
    per_class = [
        ClassScores(
            name=name,
            precision=scores["precision"],
            recall=scores["recall"],
            f1=scores["f1"],
            support=scores["support"],
        )
        for name, scores in (report.get("per_class") or {}).items()
    ]
    confusion = _artifact_json(model_version, CONFUSION_JSON) or {}
    class_names = list(confusion.get("class_names") or [])
    rows = list(zip(class_names, confusion.get("matrix") or [], strict=False))
    images = {
        key: name
        for key, name in ARTIFACT_IMAGES.items()
        if model_version_artifact_file(model_version=model_version, name=name) is not None
    }
    metadata = _artifact_json(model_version, "metadata.json") or {}
    return ModelVersionReport(
        accuracy=metrics.get("test_accuracy", report.get("accuracy")),
        macro_f1=metrics.get("test_macro_f1"),
        val_accuracy=metrics.get("val_accuracy"),
        images_evaluated=metrics.get("test_images"),
        suggested_threshold=metrics.get("suggested_threshold"),
        threshold_precision=metrics.get("threshold_precision"),
        threshold_coverage=metrics.get("threshold_coverage"),
        per_class=per_class,
        confusion_class_names=class_names,
        confusion_rows=rows,
        images=images,
        data=metadata.get("data") or {},
    )


@dataclass(frozen=True)
class ComparedFigure:
    label: str
    values: list[str]
    # Index of the version with the better value, when the figure is one where higher is better.
    best: int | None = None


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _best(values: list[float | None]) -> int | None:
    known = [(value, index) for index, value in enumerate(values) if value is not None]
    if len(known) < 2 or len({value for value, _ in known}) == 1:
        return None
    return max(known)[1]


def model_versions_compare(*, model_versions: list[ModelVersion]) -> list[ComparedFigure]:
    """Side-by-side figures of the versions: headline numbers, then F1 per category (of any version)."""
    reports = [model_version_report(model_version=version) for version in model_versions]
    figures = [
        ComparedFigure("Architecture", [version.architecture for version in model_versions]),
        ComparedFigure("Created", [f"{version.created_at:%Y-%m-%d %H:%M}" for version in model_versions]),
        ComparedFigure("Active", ["yes" if version.is_active else "no" for version in model_versions]),
        ComparedFigure("Categories", [str(len(version.class_names)) for version in model_versions]),
        ComparedFigure(
            "Trained on",
            [
                " / ".join(str(report.data.get(split, "—")) for split in ("train", "val", "test"))
                + " (train / validation / test)"
                for report in reports
            ],
        ),
        ComparedFigure("Threshold in use", [_percent(version.threshold) for version in model_versions]),
    ]
    for label, attribute in (
        ("Test accuracy", "accuracy"),
        ("Macro F1", "macro_f1"),
        ("Validation accuracy", "val_accuracy"),
        ("Suggested threshold", "suggested_threshold"),
        ("Precision at that threshold", "threshold_precision"),
        ("Filed automatically at that threshold", "threshold_coverage"),
    ):
        values = [getattr(report, attribute) for report in reports]
        # A higher threshold is not better in itself; the figures it gives are.
        best = None if attribute == "suggested_threshold" else _best(values)
        figures.append(ComparedFigure(label, [_percent(value) for value in values], best))
    names = list(dict.fromkeys(name for report in reports for name in (s.name for s in report.per_class)))
    for name in names:
        scores = [{s.name: s.f1 for s in report.per_class}.get(name) for report in reports]
        figures.append(ComparedFigure(f"F1 {name}", [_percent(value) for value in scores], _best(scores)))
    return figures


def training_run_busy() -> TrainingRun | None:
    """A run that is queued or running, if any."""
    return TrainingRun.objects.filter(status__in=RUN_IN_PROGRESS).order_by("created_at").first()


def duration_in_words(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _figure(value: float | None, *, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _progress_text(*, progress: dict, epochs: int | None) -> str:
    # Before its epochs, a pretrained backbone first computes the features of every photo.
    if "photos" in progress and "epoch" not in progress:
        return f"{progress.get('stage', 'features')}: photo {progress['photos']}/{progress['of']}"
    return f"epoch {progress.get('epoch', 0)}/{epochs if epochs else '?'}"


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
        "accuracy": _percent(progress.get("accuracy")),
        "val_accuracy": _percent(progress.get("val_accuracy")),
        "eta": "—" if finished else duration_in_words(progress.get("eta_s")),
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
        "done": job.done,
        "total": job.total,
        "failed": job.failed,
        "progress_text": f"{job.done}/{job.total}",
        "percent": round(100 * job.done / job.total) if job.total else 100,
        "error": job.error,
    }


def base_dataset_choices() -> list[str]:
    """Photo folders under VITRINE_DATASETS_DIR a retrain can add to the shop's photos."""
    from classifier.ml.datasets import BUILTIN

    datasets_dir = pathlib.Path(settings.VITRINE_DATASETS_DIR)
    if not datasets_dir.is_dir():
        return []
    return sorted(
        child.name
        for child in datasets_dir.iterdir()
        if child.is_dir() and not child.name.startswith(".") and child.name not in BUILTIN
    )


def dashboard_figures() -> dict:
    """Products by status, who filed them, products per category, and the active version's figures."""
    by_status = dict(Product.objects.values_list("status").annotate(count=Count("pk")).order_by())
    total = sum(by_status.values())
    statuses = [
        {"value": value, "label": label, "count": by_status.get(value, 0)}
        for value, label in Product.Status.choices
    ]
    filed = Product.objects.aggregate(
        predicted=Count("pk", filter=Q(category_source=Product.CategorySource.PREDICTED)),
        accepted=Count(
            "pk",
            filter=Q(category_source=Product.CategorySource.PERSON, suggested_category=F("category")),
        ),
        person=Count("pk", filter=Q(category_source=Product.CategorySource.PERSON)),
        unfiled=Count("pk", filter=Q(category__isnull=True)),
    )
    corrected = filed["person"] - filed["accepted"]
    filed_total = filed["predicted"] + filed["person"]
    shares = [
        ("Filed automatically", filed["predicted"]),
        ("Suggestion accepted by a person", filed["accepted"]),
        ("Filed or corrected by a person", corrected),
        ("Not filed yet", filed["unfiled"]),
    ]
    categories = Category.objects.annotate(
        product_count=Count("products", distinct=True),
        reviewed_count=Count(
            "products", filter=Q(products__category_source=Product.CategorySource.PERSON), distinct=True
        ),
    ).order_by("-is_active", "-product_count", "name")
    active = model_version_active()
    return {
        "total": total,
        "statuses": statuses,
        "filing": [
            {"label": label, "count": count, "percent": round(100 * count / total) if total else 0}
            for label, count in shares
        ],
        "automatic_share": round(100 * filed["predicted"] / filed_total) if filed_total else None,
        "categories": categories,
        "active_version": active,
        "active_report": model_version_report(model_version=active) if active else None,
        "training_run": TrainingRun.objects.first(),
        "bulk_job": BulkJob.objects.filter(status__in=JOB_IN_PROGRESS).first(),
        "review_count": products_needing_review().count(),
    }
