"""Per-category thresholds: a category files at its own threshold where the version has one, else at the
version's; switched off, every category uses the version's. The admin shows them with their coverage."""

from decimal import Decimal

import pytest

from catalog.models import Category, Product
from catalog.services.products import product_create
from classifier.models import ModelVersion
from tests.predictions import prediction_apply

pytestmark = pytest.mark.django_db


@pytest.fixture
def version() -> ModelVersion:
    for name in ("shoes", "shirt"):
        Category.objects.create(name=name, slug=name)
    return ModelVersion.objects.create(
        name="shop-v4",
        artifact_path="shop-v4",
        model_sha256="0" * 64,
        architecture="effnet_lite2",
        class_names=["shoes", "shirt"],
        threshold=0.9,
        is_active=True,
        metrics={
            "suggested_threshold": 0.9,
            "class_thresholds": {
                "shoes": {"threshold": 0.5, "own": True, "predicted": 40, "coverage": 0.9, "precision": 0.98},
                "shirt": {"threshold": 0.9, "own": False, "predicted": 4, "coverage": 0.5, "precision": 1.0},
            },
            "class_threshold_coverage": 0.81,
            "class_threshold_precision": 0.975,
        },
    )


def filed(version: ModelVersion, make_upload, label: str, confidence: float) -> str:
    product = product_create(name=label, sku=f"{label}-{confidence}", price=Decimal("5"), image=make_upload())
    prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label=label,
        confidence=confidence,
        model_version=version,
    )
    return Product.objects.get(pk=product.pk).status


def test_a_category_with_its_own_threshold_files_below_the_versions(version, make_upload) -> None:
    assert filed(version, make_upload, "shoes", 0.6) == Product.Status.CLASSIFIED
    assert filed(version, make_upload, "shirt", 0.6) == Product.Status.NEEDS_REVIEW


def test_switched_off_every_category_uses_the_versions_threshold(version, make_upload) -> None:
    version.per_class_thresholds = False
    version.save(update_fields=["per_class_thresholds"])

    assert filed(version, make_upload, "shoes", 0.6) == Product.Status.NEEDS_REVIEW


def test_the_version_page_shows_each_categorys_threshold_and_coverage(version, admin_client) -> None:
    page = " ".join(admin_client.get(f"/admin/classifier/modelversion/{version.pk}/change/").text.split())

    assert 'id="class-thresholds"' in page
    assert '<td>shoes</td><td class="number">50.0%</td>' in page
    assert '<td>shirt</td><td class="number">90.0% (the version\'s)</td>' in page
    together = "Together they file <strong>81.0%</strong> of the validation photos at <strong>97.5%</strong>"
    assert together in page
