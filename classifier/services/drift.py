"""The drift monitor: per day and model version, how the model does on the photos the shop really sends.

From the Prediction rows: the share of photos the version filed by itself (confidence at its threshold, not
unfamiliar, a version allowed to file), the mean confidence, the share out of distribution, and how far the
mix of predicted categories is from the mix the version was evaluated on (total variation distance: 0 the
same mix, 1 nothing in common). A day is drifting when its auto-filed share is more than
VITRINE_DRIFT_ALERT_POINTS below the version's validation figure, on at least VITRINE_DRIFT_MIN_PREDICTIONS
photos (fewer say little). Keras-free: the admin's dashboard draws it; beat logs each drifting day once.
"""

import functools
import logging
import operator
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from classifier.models import DriftAlert, ModelVersion, Prediction
from classifier.selectors import model_version_report
from classifier.services.model_versions import model_version_threshold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftDay:
    day: date
    model_version: ModelVersion
    predictions: int
    auto_filed_share: float
    mean_confidence: float
    unfamiliar_share: float
    # None when the version's evaluation mix is unknown (no classification report).
    class_mix_distance: float | None
    # The share the version filed by itself on its validation photos; None when it was not measured.
    validation_share: float | None

    @property
    def drop_points(self) -> float | None:
        if self.validation_share is None:
            return None
        return 100 * (self.validation_share - self.auto_filed_share)

    @property
    def is_drifting(self) -> bool:
        drop = self.drop_points
        return (
            drop is not None
            and self.predictions >= settings.VITRINE_DRIFT_MIN_PREDICTIONS
            and drop > settings.VITRINE_DRIFT_ALERT_POINTS
        )


def model_version_validation_share(*, model_version: ModelVersion) -> float | None:
    """What share of its validation photos the version filed by itself at its threshold."""
    metrics = model_version.metrics or {}
    if not model_version.files_automatically:
        return 0.0
    share = metrics.get("threshold_coverage_with_ood", metrics.get("threshold_coverage"))
    return float(share) if share is not None else None


def _evaluation_mix(model_version: ModelVersion) -> dict[str, float] | None:
    support = {
        scores.name: scores.support for scores in model_version_report(model_version=model_version).per_class
    }
    total = sum(support.values())
    return {name: count / total for name, count in support.items()} if total else None


def _mix_distance(counts: dict[str, int], reference: dict[str, float] | None) -> float | None:
    total = sum(counts.values())
    if reference is None or not total:
        return None
    labels = set(counts) | set(reference)
    return 0.5 * sum(abs(counts.get(label, 0) / total - reference.get(label, 0.0)) for label in labels)


def drift_days(*, days: int = 14, today: date | None = None) -> list[DriftDay]:
    """The last `days` days (today included) for every version that classified photos then, oldest first."""
    today = today or timezone.localdate()
    since = today - timedelta(days=days - 1)
    recent = Prediction.objects.filter(created_at__date__gte=since, created_at__date__lte=today).annotate(
        day=TruncDate("created_at")
    )
    result = []
    for model_version in ModelVersion.objects.filter(pk__in=recent.values("model_version")).order_by("pk"):
        # Filed by itself: at or above the threshold of the category it predicted.
        threshold_of = functools.partial(model_version_threshold, model_version=model_version)
        filed = Q(is_unfamiliar=False) & functools.reduce(
            operator.or_,
            [
                Q(label=label, confidence__gte=threshold_of(label=label))
                for label in model_version.class_names
            ],
            Q(pk__in=[]),
        )
        files = model_version.files_automatically
        rows = (
            recent.filter(model_version=model_version)
            .values("day")
            .annotate(
                count=Count("pk"),
                auto=Count("pk", filter=filed),
                unfamiliar=Count("pk", filter=Q(is_unfamiliar=True)),
                mean_confidence=Avg("confidence"),
            )
            .order_by("day")
        )
        labels: dict[date, dict[str, int]] = {}
        for row in (
            recent.filter(model_version=model_version).values("day", "label").annotate(count=Count("pk"))
        ):
            labels.setdefault(row["day"], {})[row["label"]] = row["count"]
        reference = _evaluation_mix(model_version)
        validation_share = model_version_validation_share(model_version=model_version)
        result += [
            DriftDay(
                day=row["day"],
                model_version=model_version,
                predictions=row["count"],
                auto_filed_share=row["auto"] / row["count"] if files else 0.0,
                mean_confidence=row["mean_confidence"],
                unfamiliar_share=row["unfamiliar"] / row["count"],
                class_mix_distance=_mix_distance(labels.get(row["day"], {}), reference),
                validation_share=validation_share,
            )
            for row in rows
        ]
    return sorted(result, key=lambda drift_day: (drift_day.day, drift_day.model_version.pk))


def drift_alerts_record(*, today: date | None = None) -> list[DriftAlert]:
    """Records (and logs, once each) today's and yesterday's drifting days; returns the new alerts."""
    new = []
    for drift_day in drift_days(days=2, today=today):
        if not drift_day.is_drifting:
            continue
        try:
            with transaction.atomic():
                alert = DriftAlert.objects.create(
                    model_version=drift_day.model_version,
                    day=drift_day.day,
                    predictions=drift_day.predictions,
                    auto_filed_share=drift_day.auto_filed_share,
                    validation_share=drift_day.validation_share,
                )
        except IntegrityError:
            continue  # logged when first seen
        new.append(alert)
        logger.warning(
            "drift: on %s model version %s filed %.0f%% of %s photos automatically, %.0f points below its "
            "validation figure of %.0f%%; look at the review queue and consider retraining",
            drift_day.day,
            drift_day.model_version.name,
            100 * drift_day.auto_filed_share,
            drift_day.predictions,
            drift_day.drop_points,
            100 * drift_day.validation_share,
        )
    return new
