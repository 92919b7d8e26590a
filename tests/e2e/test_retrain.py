"""Retraining from the admin on a real training worker: reviewed products in, an inactive version out, live
progress, cancel, skip, then activate and roll back. Tiny data: 3 categories of 6 photos, small, 1 epoch."""

import pathlib
import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.urls import reverse

from catalog.models import Category, Product
from classifier.models import ModelVersion, TrainingRun
from classifier.selectors import model_version_active
from tests.e2e.support import CeleryWorker, photo_bytes, product_saved_without_queueing, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CATEGORIES = ("Shirt", "Trouser", "Sandal")
PHOTOS_PER_CATEGORY = 6
# A warm worker trains the tiny recipe in seconds; this only bounds a slow shared machine.
TRAINED_WITHIN_S = 120


@pytest.fixture(autouse=True)
def trained_artifacts_removed(transactional_db: None) -> Iterator[None]:
    """The models a test trained are deleted after it: the models folder is shared by test sessions."""
    yield
    models_dir = pathlib.Path(settings.VITRINE_MODELS_DIR).resolve()
    for artifact_path in ModelVersion.objects.values_list("artifact_path", flat=True):
        artifact_dir = (models_dir / artifact_path).resolve()
        if artifact_dir.parent == models_dir:
            shutil.rmtree(artifact_dir, ignore_errors=True)


@pytest.fixture
def reviewed_catalog() -> list[Product]:
    """18 products a person filed under 3 categories, each with its own photo."""
    products = []
    for index, name in enumerate(CATEGORIES):
        category, _ = Category.objects.get_or_create(name=name, defaults={"slug": name.lower()})
        for number in range(PHOTOS_PER_CATEGORY):
            seed = index * PHOTOS_PER_CATEGORY + number
            products.append(
                product_saved_without_queueing(
                    name=f"{name.lower()}-{number}",
                    image_bytes=photo_bytes(seed=seed),
                    category=category,
                    category_source=Product.CategorySource.PERSON,
                )
            )
    return products


def progress_of(client, run: TrainingRun) -> dict:
    response = client.get(reverse("admin:classifier_trainingrun_progress", args=[run.pk]))
    assert response.status_code == 200
    return response.json()


def wait_until_finished(client, run: TrainingRun, seen: list[dict] | None = None) -> dict:
    def finished() -> dict | None:
        progress = progress_of(client, run)
        if seen is not None:
            seen.append(progress)
        return progress if progress["finished"] else None

    return wait_for(
        finished, timeout_s=TRAINED_WITHIN_S, what=f"training run {run.pk} to end", interval_s=0.25
    )


def retrain_now(client) -> TrainingRun:
    response = client.post(reverse("admin:classifier_trainingrun_retrain"), {"use_defaults": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    return TrainingRun.objects.order_by("-pk").first()


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_retrain_now_trains_an_inactive_version_that_can_be_activated_and_rolled_back(
    admin_client, celery_worker: CeleryWorker, active_model_version: ModelVersion, reviewed_catalog
):
    run = retrain_now(admin_client)
    seen: list[dict] = []
    final = wait_until_finished(admin_client, run, seen)

    assert final["status"] == "succeeded", final["message"]
    assert final["progress_text"] == "epoch 1/1"
    run.refresh_from_db()
    trained = run.model_version
    assert trained is not None and not trained.is_active
    assert trained.class_names == ["Sandal", "Shirt", "Trouser"]
    assert model_version_active() == active_model_version, "a training never switches the active version"
    assert final["message"].startswith(
        f"Trained {trained.name} (not active yet) on 18 photos in 3 categories"
    )
    assert (
        pathlib.Path(settings.VITRINE_MODELS_DIR)
        in (pathlib.Path(settings.VITRINE_MODELS_DIR) / trained.artifact_path).parents
    )
    run_page = admin_client.get(
        reverse("admin:classifier_trainingrun_change", args=[run.pk])
    ).content.decode()
    assert 'data-status="succeeded"' in run_page and f">{trained.name}</a>" in run_page

    version_page = admin_client.get(reverse("admin:classifier_modelversion_change", args=[trained.pk]))
    for name in CATEGORIES:
        assert f"<td>{name}</td>" in version_page.content.decode()

    again = retrain_now(admin_client)
    skipped = wait_until_finished(admin_client, again)
    assert skipped["status"] == "skipped"
    assert skipped["message"].startswith(
        f"Skipped: the reviewed photos and the settings are the same as in run {run.pk}"
    )

    activated = admin_client.post(
        reverse("admin:classifier_modelversion_activate", args=[trained.pk]), follow=True
    )
    assert messages_of(activated)[-1] == f"{trained.name} is now the active model version."
    assert model_version_active() == trained
    admin_client.post(reverse("admin:classifier_modelversion_roll_back"))
    assert model_version_active() == active_model_version


def test_a_running_training_shows_live_progress_and_stops_when_cancelled(
    admin_client, celery_worker: CeleryWorker, reviewed_catalog
):
    admin_client.post(
        reverse("admin:classifier_trainingrun_retrain"),
        {"architecture": "seed_dense", "epochs": "5000", "image_size": "16", "base_dataset": ""},
    )
    run = TrainingRun.objects.get()

    epochs_seen = set()

    def two_epochs_reported() -> bool:
        progress = progress_of(admin_client, run)
        if progress["status"] == "running" and progress["epoch"]:
            epochs_seen.add(progress["epoch"])
        return len(epochs_seen) >= 2

    wait_for(two_epochs_reported, timeout_s=TRAINED_WITHIN_S, what="two progress reports", interval_s=0.2)
    admin_client.post(reverse("admin:classifier_trainingrun_cancel", args=[run.pk]))
    final = wait_until_finished(admin_client, run)

    assert final["status"] == "cancelled"
    assert final["message"].startswith("Cancelled by a person at epoch ")
    assert final["message"].endswith("/5000; no model version was made.")
    assert not ModelVersion.objects.exists()
