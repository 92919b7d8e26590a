"""manage.py bootstrap_model: a fresh install serves the starter real-photo model, or says why not and falls
back to a model that never files a product by itself."""

import io
import pathlib
from decimal import Decimal

import pytest
from django.core.management import call_command

from catalog.models import Category, Product
from catalog.services.products import product_create
from classifier.ml.backbones.efficientnet_lite import backbone_available
from classifier.ml.starter import read_starter_summary
from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_threshold
from tests.predictions import prediction_apply

pytestmark = pytest.mark.django_db


def bootstrap(*args: str) -> str:
    stdout = io.StringIO()
    call_command("bootstrap_model", *args, stdout=stdout)
    return stdout.getvalue()


@pytest.fixture
def models_dir(settings, tmp_path) -> pathlib.Path:
    settings.VITRINE_MODELS_DIR = tmp_path / "models"
    return settings.VITRINE_MODELS_DIR


@pytest.mark.skipif(not backbone_available("lite2"), reason="the EfficientNet-Lite2 wheel is not installed")
def test_a_fresh_install_activates_the_starter_real_photo_model_and_its_categories(models_dir) -> None:
    output = bootstrap()

    version = ModelVersion.objects.get(is_active=True)
    assert version.files_automatically
    assert version.architecture == "starter_effnet_lite2"
    assert 0.5 < version.threshold < 1
    # What the repository's record says the head scored on clothing-small/validation (87.1 % today).
    assert version.metrics["test_accuracy"] == read_starter_summary()["metrics"]["test_accuracy"] > 0.85
    assert sorted(Category.objects.values_list("slug", flat=True)) == sorted(
        ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
    )
    # Each category files at its own threshold where the out-of-fold photos could pick one.
    own = {name: entry for name, entry in version.metrics["class_thresholds"].items() if entry["own"]}
    assert len(own) >= 5
    name, entry = next(iter(own.items()))
    assert model_version_threshold(model_version=version, label=name) == entry["threshold"]
    assert f"Model version {version.name} is active" in output
    assert "top-1 on clothing-small/validation" in output and "CPU flags:" in output
    assert bootstrap() == f"Model version {version.name} is active; nothing to do.\n"


def test_without_the_starter_it_says_why_in_one_line_and_its_fallback_never_files_by_itself(
    models_dir, tmp_path, make_upload
) -> None:
    output = bootstrap(
        f"--starter-dir={tmp_path / 'no-starter-here'}", "--fallback-subset=100", "--fallback-epochs=1"
    )

    reason = [line for line in output.splitlines() if line.startswith("Starter model unavailable")]
    assert len(reason) == 1 and "every product will wait for review" in reason[0]
    version = ModelVersion.objects.get(is_active=True)
    assert (version.architecture, version.files_automatically) == ("seed_lenet", False)

    product = product_create(name="Tee", sku="T-1", price=Decimal("9"), image=make_upload("tee.jpg"))
    filed = prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label=version.class_names[0],
        confidence=0.999,
        model_version=version,
    )
    assert (filed.status, filed.category, filed.review_reason) == (
        Product.Status.NEEDS_REVIEW,
        None,
        Product.ReviewReason.NOT_VALIDATED,
    )
