"""Reads of the classifier for the admin: training and bulk job progress, version reports, the dashboard.

No TensorFlow here: a model version's figures come from the JSON files its training wrote beside the model.
"""

import json
import logging
import pathlib
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Count, F, Q, QuerySet
from django.utils.translation import gettext

from catalog.models import Category, Product
from catalog.selectors import products_needing_review
from classifier.artifacts import model_version_artifact_dir, model_version_report_file
from classifier.ml.active import CANDIDATES, label_next_order, margin_uncertainty
from classifier.ml.clusters import alike_groups
from classifier.ml.formats import (
    ARTIFACT_IMAGES,
    BUILTIN_DATASETS,
    CONFUSION_JSON,
    METADATA_FILE,
    REPORT_JSON,
)
from classifier.models import BulkJob, ModelActivation, ModelVersion, Prediction, TrainingRun
from classifier.services.similarity import embedding_vector

logger = logging.getLogger(__name__)

# Artifact files the admin may serve: the evaluation's pictures and tables, never the model itself.
SERVABLE_SUFFIXES = (".png", ".json", ".txt")
RUN_IN_PROGRESS = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
JOB_IN_PROGRESS = (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)
# The review queue's "most useful first" order keeps this many first places (two pages) apart by likeness.
LABEL_NEXT_DIVERSE = 100
# "New categories to consider" groups at most this many unfamiliar photos waiting, the newest (bounds the work
# of classifier.ml.clusters, quadratic in memory, per queue page).
PROPOSE_MAX_PHOTOS = 500


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_roll_back_target() -> ModelVersion | None:
    """The version that was active before the active one took over, or None."""
    active = model_version_active()
    if active is None:
        return None
    activation = ModelActivation.objects.filter(model_version=active).select_related("previous").first()
    return activation.previous if activation is not None else None


def model_version_artifact_file(*, model_version: ModelVersion, name: str) -> pathlib.Path | None:
    """The named evaluation file of the version, or None unless it is a servable file inside its directory."""
    if not name or "/" in name or "\\" in name or not name.endswith(SERVABLE_SUFFIXES):
        return None
    artifact_dir = model_version_artifact_dir(model_version=model_version).resolve()
    if (artifact_dir / name).resolve().parent != artifact_dir:
        return None
    path = model_version_report_file(model_version=model_version, name=name)
    return path if path is not None and path.is_file() else None


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
    # Temperature and calibration error (ECE) before and after; the out-of-distribution limit ({} if none).
    calibration: dict
    ood: dict


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
    metadata = _artifact_json(model_version, METADATA_FILE) or {}
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
        calibration=metrics.get("calibration") or {},
        ood=metrics.get("ood") or {},
    )


def training_run_busy() -> TrainingRun | None:
    """A run that is queued or running, if any."""
    return TrainingRun.objects.filter(status__in=RUN_IN_PROGRESS).order_by("created_at").first()


def training_run_last_seconds() -> dict[str, float | None]:
    """How long the last successful run of each kind ("full", "quick") took in seconds (None: none yet)."""
    succeeded = TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False
    ).order_by("-finished_at", "-pk")
    kinds = {
        # Runs from before quick retrains have no kind: they were full ones.
        "full": succeeded.filter(Q(params__kind="full") | ~Q(params__has_key="kind")),
        "quick": succeeded.filter(params__kind="quick"),
    }
    seconds = {}
    for kind, runs in kinds.items():
        run = runs.first()
        seconds[kind] = (run.finished_at - run.started_at).total_seconds() if run is not None else None
    return seconds


def base_dataset_choices() -> list[str]:
    """Photo folders under VITRINE_DATASETS_DIR a retrain can add to the shop's photos."""
    datasets_dir = pathlib.Path(settings.VITRINE_DATASETS_DIR)
    if not datasets_dir.is_dir():
        return []
    return sorted(
        child.name
        for child in datasets_dir.iterdir()
        if child.is_dir() and not child.name.startswith(".") and child.name not in BUILTIN_DATASETS
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
        person=Count("pk", filter=Q(category_source=Product.CategorySource.PERSON, category__isnull=False)),
        # A person's "no category" is a decision, not a product waiting to be filed.
        left_out=Count("pk", filter=Q(category_source=Product.CategorySource.PERSON, category__isnull=True)),
        unfiled=Count(
            "pk", filter=Q(category__isnull=True) & ~Q(category_source=Product.CategorySource.PERSON)
        ),
    )
    corrected = filed["person"] - filed["accepted"]
    filed_total = filed["predicted"] + filed["person"]
    shares = [
        (gettext("Filed automatically"), filed["predicted"]),
        (gettext("Suggestion accepted by a person"), filed["accepted"]),
        (gettext("Filed or corrected by a person"), corrected),
        (gettext("Left without a category by a person"), filed["left_out"]),
        (gettext("Not filed yet"), filed["unfiled"]),
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


def review_queue_label_next(*, products: QuerySet[Product]) -> list[int]:
    """Ids of the most useful of `products` to label, most useful first (classifier.ml.active): the
    CANDIDATES least decided by their latest prediction's two best categories, the first LABEL_NEXT_DIVERSE of
    them also kept apart from each other by their photos' embeddings. Products beyond these are not listed."""
    rows = list(products.values_list("pk", "confidence"))
    if not rows:
        return []
    ids = [pk for pk, _ in rows]
    tops = dict(
        Prediction.objects.filter(
            product_id__in=ids,
            model_version_id=F("product__model_version_id"),
            image_sha256=F("product__image_sha256"),
        ).values_list("product_id", "top")
    )
    best_two = np.zeros((len(rows), 2))
    for index, (pk, confidence) in enumerate(rows):
        top = [score for _, score in tops.get(pk) or []][:2]
        best_two[index, : len(top)] = top
        if not top:
            best_two[index, 0] = confidence or 0.0
    uncertainty = margin_uncertainty(best_two)
    candidates = [ids[index] for index in label_next_order(uncertainty, window=0)[:CANDIDATES]]
    embeddings = dict(
        Prediction.objects.filter(
            product_id__in=candidates,
            model_version_id=F("product__model_version_id"),
            image_sha256=F("product__image_sha256"),
            embedding__isnull=False,
        ).values_list("product_id", "embedding")
    )
    position = {pk: index for index, pk in enumerate(ids)}
    vectors = [embedding_vector(embeddings[pk]) if pk in embeddings else None for pk in candidates]
    size = max((len(vector) for vector in vectors if vector is not None), default=0)
    matrix = np.zeros((len(candidates), size), dtype=np.float32)
    for index, vector in enumerate(vectors):
        if vector is not None and len(vector) == size:
            matrix[index] = vector
    order = label_next_order(
        uncertainty[[position[pk] for pk in candidates]],
        matrix if size else None,
        window=LABEL_NEXT_DIVERSE,
    )
    return [candidates[index] for index in order]


def review_queue_new_categories(*, similarity: float, min_photos: int) -> list[list[Product]]:
    """Groups of photos waiting for review as "not one of your categories" that look alike (classifier.ml.
    clusters on their latest prediction's embeddings, compared within one model version): each a category
    the shop may not have yet. Largest group first; each group's products oldest first."""
    waiting = list(
        products_needing_review()
        .filter(review_reason=Product.ReviewReason.UNFAMILIAR)
        .order_by("-status_changed_at", "-pk")[:PROPOSE_MAX_PHOTOS]
    )
    embeddings = dict(
        Prediction.objects.filter(
            product_id__in=[product.pk for product in waiting],
            model_version_id=F("product__model_version_id"),
            image_sha256=F("product__image_sha256"),
            embedding__isnull=False,
        ).values_list("product_id", "embedding")
    )
    by_version: dict[int, list[Product]] = {}
    for product in reversed(waiting):
        if product.pk in embeddings:
            by_version.setdefault(product.model_version_id, []).append(product)
    groups = []
    for products in by_version.values():
        matrix = np.stack([embedding_vector(embeddings[product.pk]) for product in products])
        for indices in alike_groups(matrix, similarity=similarity, min_size=min_photos):
            groups.append([products[index] for index in indices])
    groups.sort(key=lambda group: -len(group))
    return groups
