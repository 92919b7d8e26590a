import itertools
from collections.abc import Callable
from decimal import Decimal

import pytest

from catalog.models import Category, Product
from catalog.services.products import product_create
from classifier.models import ModelVersion

ProductFactory = Callable[..., Product]


@pytest.fixture
def category(db) -> Category:
    return Category.objects.create(name="Shirt", slug="shirt")


@pytest.fixture
def other_category(db) -> Category:
    return Category.objects.create(name="Trouser", slug="trouser")


@pytest.fixture
def model_version(db) -> ModelVersion:
    return ModelVersion.objects.create(
        name="vitrine_cnn-test",
        artifact_path="vitrine_cnn-test",
        model_sha256="0" * 64,
        architecture="vitrine_cnn",
        class_names=["Shirt", "Trouser"],
        threshold=0.9,
        is_active=True,
    )


@pytest.fixture
def make_product(db, make_upload) -> ProductFactory:
    """make_product(name="Blue shirt", **product_create keywords) -> a product saved through the service."""
    skus = itertools.count(1)

    def make(**fields) -> Product:
        fields.setdefault("name", "Blue shirt")
        fields.setdefault("sku", f"SKU-{next(skus):04d}")
        fields.setdefault("price", Decimal("19.90"))
        fields.setdefault("image", make_upload("blue shirt.jpg"))
        return product_create(**fields)

    return make


@pytest.fixture
def record_prediction(model_version: ModelVersion) -> Callable[..., Product]:
    """Writes what a worker's prediction leaves on a product (state only; the classifier is not run here)."""

    def record(
        product: Product,
        *,
        suggested: Category,
        confidence: float,
        status: str = Product.Status.CLASSIFIED,
        filed: bool = True,
    ) -> Product:
        fields = {
            "suggested_category": suggested,
            "confidence": confidence,
            "model_version": model_version,
            "classified_sha256": product.image_sha256,
            "status": status,
        }
        if filed:
            fields |= {"category": suggested, "category_source": Product.CategorySource.PREDICTED}
        else:
            fields["review_reason"] = Product.ReviewReason.LOW_CONFIDENCE
        Product.objects.filter(pk=product.pk).update(**fields)
        product.refresh_from_db()
        return product

    return record
