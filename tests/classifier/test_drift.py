"""The drift monitor on a synthetic drop: the figures per day, one log line per drifting day, the banner."""

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.services.products import product_create
from classifier.models import DriftAlert, ModelVersion, Prediction
from classifier.services.drift import drift_alerts_record, drift_days

pytestmark = pytest.mark.django_db


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(
        name="shop-v3",
        artifact_path="shop-v3",
        model_sha256="0" * 64,
        architecture="effnet_lite2",
        class_names=["dress", "shirt"],
        threshold=0.8,
        metrics={"threshold_coverage": 0.76},
        is_active=True,
    )


def classified(version: ModelVersion, product, *, days_ago: int, confident: int, unsure: int, unfamiliar=0):
    """Prediction rows `days_ago` days old: `confident` at 0.9, `unsure` at 0.5 (`unfamiliar` of those)."""
    rows = [
        Prediction(
            product=product,
            model_version=version,
            image_sha256=f"{days_ago}-{index}",
            label="dress" if index % 2 else "shirt",
            confidence=0.9 if index < confident else 0.5,
            is_unfamiliar=confident <= index < confident + unfamiliar,
        )
        for index in range(confident + unsure)
    ]
    created = Prediction.objects.bulk_create(rows)
    Prediction.objects.filter(pk__in=[row.pk for row in created]).update(
        created_at=timezone.now() - timedelta(days=days_ago)
    )


@pytest.fixture
def product(make_upload):
    return product_create(name="Dress", sku="D-1", price=Decimal("10"), image=make_upload())


def test_each_day_shows_the_auto_filed_share_against_the_validation_figure(version, product) -> None:
    classified(version, product, days_ago=1, confident=32, unsure=8)
    classified(version, product, days_ago=0, confident=12, unsure=28, unfamiliar=4)

    yesterday, today = drift_days(days=14)

    assert (yesterday.predictions, yesterday.auto_filed_share) == (40, 0.8)
    assert not yesterday.is_drifting
    assert (today.predictions, today.auto_filed_share, today.unfamiliar_share) == (40, 0.3, 0.1)
    assert today.drop_points == pytest.approx(46)
    assert today.is_drifting
    assert today.mean_confidence == pytest.approx((12 * 0.9 + 28 * 0.5) / 40)


def test_a_drop_is_logged_once_and_a_small_day_is_not_judged(version, product, caplog, settings) -> None:
    classified(version, product, days_ago=0, confident=12, unsure=28)

    with caplog.at_level(logging.WARNING, logger="classifier.services.drift"):
        first = drift_alerts_record()
        second = drift_alerts_record()

    assert len(first) == 1 and second == []
    (line,) = [record.getMessage() for record in caplog.records]
    assert "model version shop-v3 filed 30% of 40 photos automatically, 46 points below" in line
    settings.VITRINE_DRIFT_MIN_PREDICTIONS = 41
    DriftAlert.objects.all().delete()
    assert drift_alerts_record() == []


def test_the_dashboard_shows_a_banner_for_a_drop_and_none_without(version, product, admin_client) -> None:
    classified(version, product, days_ago=1, confident=32, unsure=8)
    calm = admin_client.get("/admin/").text
    classified(version, product, days_ago=0, confident=12, unsure=28)

    page = admin_client.get("/admin/").text

    assert 'id="drift-chart"' in calm and 'id="drift-banner"' not in calm
    assert 'id="drift-banner"' in page
    assert "filed 30% of 40 photos automatically" in " ".join(page.split())
    assert "46 points below its validation figure (76%)" in " ".join(page.split())
