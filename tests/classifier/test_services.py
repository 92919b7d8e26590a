"""classifier.services on PostgreSQL and Redis: queueing, predictions, failures, the sweep, model versions."""

import base64
import json
import logging
import pathlib
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product
from catalog.services.classification import product_classification_fail
from catalog.services.products import product_create
from classifier.models import ModelVersion, Prediction
from classifier.selectors import model_version_active
from classifier.services.classification import (
    PhotoPrediction,
    classification_enqueue,
    prediction_record,
    products_sweep_stuck,
)
from classifier.services.model_versions import (
    ModelVersionError,
    model_version_activate,
    model_version_register,
)
from config.celery_app import app as celery_app
from tests.e2e.support import BrokerQueues, broker_unreachable
from tests.predictions import prediction_apply

pytestmark = pytest.mark.django_db

INFERENCE = "inference"


@pytest.fixture
def broker_queues(settings) -> BrokerQueues:
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    yield queues
    queues.clear()


@pytest.fixture
def model_version() -> ModelVersion:
    """A registered version row (the files are not needed to record predictions)."""
    return ModelVersion.objects.create(
        name="v1",
        artifact_path="v1",
        model_sha256="0" * 64,
        architecture="seed_dense",
        class_names=["Shirt", "Trouser"],
        threshold=0.8,
        is_active=True,
    )


@pytest.fixture
def product(make_upload) -> Product:
    """A saved product; in these (non-transactional) tests its after-commit enqueue never runs."""
    return product_create(
        name="Oxford shirt",
        sku="OX-1",
        price=Decimal("35.00"),
        image=make_upload("oxford.png", image_format="PNG"),
    )


def queued_product_ids(queues: BrokerQueues) -> list[int]:
    """The product ids of the classify_products messages waiting in Redis, oldest first."""
    product_ids = []
    for raw in reversed(queues.client.lrange(INFERENCE, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == "classifier.tasks.classify_products"
        assert message["content-type"] == "application/json"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        product_ids.extend(kwargs["product_ids"])
    return product_ids


def test_enqueue_sends_the_product_to_the_inference_queue_and_marks_it_queued(
    product: Product, broker_queues: BrokerQueues
) -> None:
    assert classification_enqueue(product_ids=[product.pk]) == 1

    assert queued_product_ids(broker_queues) == [product.pk]
    product.refresh_from_db()
    assert product.status == Product.Status.QUEUED


def test_enqueue_with_the_broker_down_returns_at_once_and_leaves_the_product_pending(
    product: Product, caplog
) -> None:
    with (
        broker_unreachable(celery_app),
        caplog.at_level(logging.WARNING, logger="catalog.queues"),
    ):
        started = time.monotonic()
        sent = classification_enqueue(product_ids=[product.pk])
        elapsed_s = time.monotonic() - started

    assert sent == 0
    assert elapsed_s < 3
    product.refresh_from_db()
    assert product.status == Product.Status.PENDING
    assert f"product {product.pk} stays pending: cannot reach the broker" in caplog.text


def test_enqueue_never_turns_a_classified_product_back_into_queued(
    product: Product, model_version: ModelVersion, broker_queues: BrokerQueues
) -> None:
    prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.9,
        model_version=model_version,
    )

    assert classification_enqueue(product_ids=[product.pk])

    product.refresh_from_db()
    assert product.status == Product.Status.CLASSIFIED


def test_a_confident_prediction_files_the_product(product: Product, model_version: ModelVersion) -> None:
    applied = prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.8,
        model_version=model_version,
    )

    assert applied.status == Product.Status.CLASSIFIED
    assert applied.category.name == "Shirt"
    assert applied.category_source == Product.CategorySource.PREDICTED
    assert (applied.suggested_category, applied.confidence, applied.model_version) == (
        applied.category,
        0.8,
        model_version,
    )
    assert applied.classified_sha256 == product.image_sha256


def test_an_unsure_prediction_is_only_suggested_and_waits_for_review(
    product: Product, model_version: ModelVersion
) -> None:
    applied = prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Trouser",
        confidence=0.79,
        model_version=model_version,
    )

    assert applied.status == Product.Status.NEEDS_REVIEW
    assert applied.category is None
    assert applied.category_source == Product.CategorySource.NONE
    assert applied.suggested_category.name == "Trouser"


def test_a_confident_prediction_for_an_unfamiliar_photo_waits_for_review_with_the_reason(
    product: Product, model_version: ModelVersion
) -> None:
    applied = prediction_record(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        prediction=PhotoPrediction(
            label="Shirt", confidence=0.99, top=[("Shirt", 0.99)], ood_score=41.5, is_unfamiliar=True
        ),
        model_version=model_version,
    )

    assert (applied.status, applied.category) == (Product.Status.NEEDS_REVIEW, None)
    assert applied.review_reason == Product.ReviewReason.UNFAMILIAR
    assert applied.get_review_reason_display() == "Not one of your categories"
    assert applied.unfamiliarity == 41.5
    kept = Prediction.objects.get(product=product)
    assert (kept.label, kept.confidence, kept.ood_score, kept.is_unfamiliar) == ("Shirt", 0.99, 41.5, True)


def test_a_prediction_is_kept_once_per_photo_and_version(
    product: Product, model_version: ModelVersion
) -> None:
    for _ in range(2):
        prediction_apply(
            product_id=product.pk,
            image_sha256=product.image_sha256,
            label="Shirt",
            confidence=0.6,
            model_version=model_version,
        )

    assert Prediction.objects.filter(product=product, model_version=model_version).count() == 1


def test_a_version_without_its_own_threshold_uses_the_configured_one(
    product: Product, model_version: ModelVersion, settings
) -> None:
    settings.VITRINE_CONFIDENCE_THRESHOLD = 0.5
    model_version.threshold = None
    model_version.save()

    applied = prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.6,
        model_version=model_version,
    )

    assert applied.status == Product.Status.CLASSIFIED


def test_a_persons_category_is_kept_and_the_prediction_only_recorded(
    make_upload, model_version: ModelVersion, admin_user
) -> None:
    gifts = Category.objects.create(name="Gifts", slug="gifts")
    product = product_create(
        name="Tie", sku="T-1", price=Decimal("9"), image=make_upload(), category=gifts, created_by=admin_user
    )

    applied = prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.99,
        model_version=model_version,
    )

    assert (applied.category, applied.category_source) == (gifts, Product.CategorySource.PERSON)
    assert applied.suggested_category.name == "Shirt"
    assert applied.status == Product.Status.CLASSIFIED


def test_a_prediction_for_a_replaced_photo_changes_nothing(
    product: Product, model_version: ModelVersion
) -> None:
    applied = prediction_apply(
        product_id=product.pk,
        image_sha256="f" * 64,
        label="Shirt",
        confidence=0.99,
        model_version=model_version,
    )

    assert applied.status == Product.Status.PENDING
    assert applied.suggested_category is None
    assert applied.classified_sha256 == ""


def test_applying_the_same_prediction_twice_leaves_the_same_product(
    product: Product, model_version: ModelVersion, caplog, django_capture_on_commit_callbacks
) -> None:
    arguments = dict(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.9,
        model_version=model_version,
    )
    with (
        caplog.at_level(logging.INFO, logger="catalog.queues"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        first = prediction_apply(**arguments)
        second = prediction_apply(**arguments)

    fields = ("status", "status_changed_at", "category_id", "suggested_category_id", "confidence")
    assert [getattr(second, name) for name in fields] == [getattr(first, name) for name in fields]
    assert caplog.text.count(f"classification applied: product {product.pk} ") == 1


def test_a_failure_is_recorded_with_its_reason(product: Product) -> None:
    failed = product_classification_fail(product_id=product.pk, error="oxford.png: truncated file")

    assert failed.status == Product.Status.FAILED
    assert failed.classification_error == "oxford.png: truncated file"


def test_a_failure_for_a_replaced_photo_is_ignored(product: Product) -> None:
    failed = product_classification_fail(
        product_id=product.pk, error="old photo unreadable", image_sha256="e" * 64
    )

    assert failed.status == Product.Status.PENDING
    assert failed.classification_error == ""


def _age(product: Product, *, seconds: int, status: str) -> None:
    Product.objects.filter(pk=product.pk).update(
        status=status, status_changed_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_the_sweep_sends_again_only_products_stuck_past_the_timeout(
    make_upload, model_version: ModelVersion, broker_queues: BrokerQueues, settings
) -> None:
    settings.VITRINE_STUCK_AFTER_SECONDS = 60
    products = [
        product_create(name=f"P{n}", sku=f"P-{n}", price=Decimal("1"), image=make_upload(noise=True, seed=n))
        for n in range(5)
    ]
    stuck_pending, stuck_queued, fresh_pending, old_classified, old_failed = products
    _age(stuck_pending, seconds=120, status=Product.Status.PENDING)
    _age(stuck_queued, seconds=120, status=Product.Status.QUEUED)
    _age(fresh_pending, seconds=10, status=Product.Status.PENDING)
    _age(old_classified, seconds=120, status=Product.Status.CLASSIFIED)
    _age(old_failed, seconds=120, status=Product.Status.FAILED)

    sent = products_sweep_stuck()

    assert sent == 2
    assert sorted(queued_product_ids(broker_queues)) == sorted([stuck_pending.pk, stuck_queued.pk])
    stuck_pending.refresh_from_db()
    assert stuck_pending.status == Product.Status.QUEUED
    # Sent again just now: the next sweep leaves it alone.
    assert products_sweep_stuck() == 0


def test_the_sweep_with_the_broker_down_sends_nothing_and_keeps_products_pending(
    product: Product, broker_queues: BrokerQueues
) -> None:
    _age(product, seconds=3600, status=Product.Status.PENDING)

    with broker_unreachable(celery_app):
        assert products_sweep_stuck(older_than_s=60) == 0

    product.refresh_from_db()
    assert product.status == Product.Status.PENDING
    assert broker_queues.length(INFERENCE) == 0


def test_registering_a_trained_model_records_its_metadata(tiny_model: pathlib.Path) -> None:
    registered = model_version_register(artifact_dir=tiny_model)

    metadata = json.loads((tiny_model / "metadata.json").read_text())
    assert registered.name == tiny_model.name
    assert registered.class_names == metadata["class_names"]
    assert registered.model_sha256 == metadata["model_sha256"]
    assert registered.architecture == "seed_dense"
    assert registered.metrics["test_accuracy"] == metadata["metrics"]["test_accuracy"]
    assert registered.is_active is False
    assert model_version_active() is None


def test_activating_a_version_creates_its_categories_and_retires_the_previous_one(
    tiny_model: pathlib.Path,
) -> None:
    first = model_version_register(artifact_dir=tiny_model, name="first", activate=True)
    second = model_version_register(artifact_dir=tiny_model, name="second")

    model_version_activate(model_version=second)

    first.refresh_from_db()
    assert (first.is_active, model_version_active()) == (False, second)
    assert set(Category.objects.values_list("name", flat=True)) == set(second.class_names)


@pytest.mark.parametrize(
    ("make_dir", "message"),
    [
        (lambda root: root / "missing", "no such model directory"),
        (lambda root: root, "metadata.json is missing"),
    ],
)
def test_registering_something_that_is_not_a_model_directory_is_refused(
    tmp_path: pathlib.Path, make_dir, message: str
) -> None:
    with pytest.raises(ModelVersionError, match=message):
        model_version_register(artifact_dir=make_dir(tmp_path))


def test_registering_a_name_twice_is_refused(tiny_model: pathlib.Path) -> None:
    model_version_register(artifact_dir=tiny_model, name="shop-v1")

    with pytest.raises(ModelVersionError, match="'shop-v1' already exists"):
        model_version_register(artifact_dir=tiny_model, name="shop-v1")


def test_the_admin_activate_action_makes_the_chosen_version_the_active_one(
    admin_client, tiny_model: pathlib.Path
) -> None:
    model_version_register(artifact_dir=tiny_model, name="current", activate=True)
    chosen = model_version_register(artifact_dir=tiny_model, name="chosen")

    response = admin_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "activate", "_selected_action": [chosen.pk]},
        follow=True,
    )

    assert [str(message) for message in response.context["messages"]] == [
        "chosen is now the active model version."
    ]
    assert model_version_active() == chosen
