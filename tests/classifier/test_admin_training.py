"""Retraining from the admin: the button, the run page and its JSON, cancelling, what a run trains on, and
what a run does when it cannot train (the service runs in this process here; tests/e2e/test_retrain.py trains
on a real worker). Also the start and sweep of bulk re-classification jobs."""

import itertools
import json
import pathlib
import re
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product
from catalog.services.products import product_create
from classifier.artifacts import model_version_artifact_dir
from classifier.ml.datasets import DatasetError, load_labelled_files
from classifier.models import BulkJob, ModelVersion, TrainingRun
from classifier.services.bulk import BulkJobError, bulk_job_create, bulk_jobs_sweep
from classifier.services.model_versions import model_version_activate
from classifier.services.training import (
    training_runs_fail_orphaned,
    training_runs_sweep,
    training_set_collect,
)
from classifier.workers.training import training_run_execute
from tests.e2e.support import BrokerQueues, photo_bytes

pytestmark = pytest.mark.django_db

RETRAIN_URL = "/admin/classifier/trainingrun/retrain/"


@pytest.fixture
def broker_queues(settings) -> BrokerQueues:
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    yield queues
    queues.clear()


@pytest.fixture
def reviewed(make_upload):
    """reviewed("Shirt", 3) -> three products a person filed under that (new or existing) category."""
    numbers = itertools.count()

    def make(category_name: str, count: int, **category_fields) -> list[Product]:
        category, _ = Category.objects.get_or_create(
            name=category_name, defaults={"slug": category_name.lower(), **category_fields}
        )
        products = []
        for _ in range(count):
            number = next(numbers)
            products.append(
                product_create(
                    name=f"{category_name} {number}",
                    sku=f"R-{number}",
                    price=Decimal("10"),
                    image=make_upload(f"{number}.png", image_format="PNG", noise=True, seed=number),
                    category=category,
                )
            )
        return products

    return make


def run_url(run: TrainingRun) -> str:
    return reverse("admin:classifier_trainingrun_change", args=[run.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_retrain_now_queues_a_run_with_the_default_recipe_and_opens_its_page(
    admin_client, admin_user, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(RETRAIN_URL, {"use_defaults": "1"})

    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run_url(run)
    assert run.status == TrainingRun.Status.QUEUED and run.created_by == admin_user
    assert run.params == {
        "kind": "full",
        "architecture": settings.VITRINE_RETRAIN_ARCH,
        "epochs": settings.VITRINE_RETRAIN_EPOCHS,
        "image_size": settings.VITRINE_RETRAIN_IMAGE_SIZE,
        "base_dataset": "",
    }
    assert [callback.keywords for callback in callbacks] == [{"run_id": run.pk}]


def test_the_run_lists_offer_quick_and_full_retrain(admin_client):
    for url in ("/admin/classifier/trainingrun/", "/admin/classifier/modelversion/"):
        page = admin_client.get(url).content.decode()
        assert 'id="retrain-now"' in page and ">Full retrain</button>" in page
        assert 'id="retrain-quick"' in page and ">Quick retrain</button>" in page
        assert 'id="retrain-settings"' in page


def test_quick_retrain_without_an_active_version_says_what_to_do_and_queues_nothing(admin_client):
    response = admin_client.post(RETRAIN_URL, {"kind": "quick"}, follow=True)

    assert messages_of(response) == [
        "a quick retrain starts from the active model version, and none is active; "
        "run a full retrain or activate a version first"
    ]
    assert not TrainingRun.objects.exists()


def test_quick_retrain_refuses_an_active_version_not_trained_here(admin_client):
    ModelVersion.objects.create(
        name="imported", artifact_path="x", model_sha256="0" * 64, architecture="starter", is_active=True
    )

    response = admin_client.post(RETRAIN_URL, {"kind": "quick"}, follow=True)

    assert "was not trained here, so a quick retrain cannot start from it" in messages_of(response)[0]
    assert not TrainingRun.objects.exists()


def test_quick_retrain_from_the_admin_makes_a_new_version_from_the_active_one_and_shows_its_time(
    admin_client, reviewed, django_capture_on_commit_callbacks
):
    reviewed("Shirt", 3)
    reviewed("Trouser", 3)
    with django_capture_on_commit_callbacks():
        admin_client.post(RETRAIN_URL, {"use_defaults": "1"})
    full = training_run_execute(run_id=TrainingRun.objects.get().pk)
    assert full.status == TrainingRun.Status.SUCCEEDED, full.error
    model_version_activate(model_version=full.model_version)
    reviewed("Trouser", 2)  # corrections since

    with django_capture_on_commit_callbacks():
        response = admin_client.post(RETRAIN_URL, {"kind": "quick"})
    quick = TrainingRun.objects.exclude(pk=full.pk).get()
    assert response.status_code == 302 and response["Location"] == run_url(quick)
    assert quick.params["kind"] == "quick" and quick.params["base_version"] == full.model_version.pk
    quick = training_run_execute(run_id=quick.pk)

    assert quick.status == TrainingRun.Status.SUCCEEDED, quick.error
    version = quick.model_version
    assert version.name.startswith("seed_dense-quick-run") and not version.is_active
    assert version.class_names == ["Shirt", "Trouser"]
    assert "on 8 photos in 2 categories" in quick.message
    metadata = json.loads((model_version_artifact_dir(model_version=version) / "metadata.json").read_text())
    assert metadata["kind"] == "quick"
    assert metadata["base_model_sha256"] == full.model_version.model_sha256
    page = admin_client.get("/admin/classifier/trainingrun/").content.decode()
    assert re.search(r"Quick retrain <span class=\"retrain-last-time\">\(last took \d+s\)</span>", page)
    assert re.search(r"Full retrain <span class=\"retrain-last-time\">\(last took \d+s\)</span>", page)


def test_the_settings_page_starts_a_run_with_the_settings_chosen(
    admin_client, settings, tmp_path: pathlib.Path, django_capture_on_commit_callbacks
):
    settings.VITRINE_DATASETS_DIR = tmp_path
    (tmp_path / "clothing-small" / "train" / "Shirt").mkdir(parents=True)
    page = admin_client.get(RETRAIN_URL).content.decode()

    with django_capture_on_commit_callbacks():
        admin_client.post(
            RETRAIN_URL,
            {
                "architecture": "seed_lenet",
                "epochs": "3",
                "image_size": "48",
                "base_dataset": "clothing-small",
            },
        )

    for field in ("id_architecture", "id_epochs", "id_image_size", "id_base_dataset"):
        assert f'id="{field}"' in page
    assert '<option value="clothing-small">clothing-small</option>' in page
    assert 'id="start-training"' in page
    assert TrainingRun.objects.get().params == {
        "kind": "full",
        "architecture": "seed_lenet",
        "epochs": 3,
        "image_size": 48,
        "base_dataset": "clothing-small",
    }


def test_settings_it_cannot_train_with_are_refused_on_the_form(admin_client):
    response = admin_client.post(
        RETRAIN_URL, {"architecture": "seed_dense", "epochs": "0", "image_size": "4"}
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 1." in page
    assert "Ensure this value is greater than or equal to 8." in page
    assert not TrainingRun.objects.exists()


def test_a_second_run_is_refused_while_one_is_running(admin_client):
    running = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now())

    response = admin_client.post(RETRAIN_URL, {"use_defaults": "1"}, follow=True)

    assert messages_of(response) == [
        f"training run {running.pk} is running; wait until it ends or cancel it before starting another"
    ]
    assert TrainingRun.objects.count() == 1


def test_the_run_page_shows_live_progress_and_a_cancel_button(admin_client):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING,
        params={"epochs": 8},
        progress={"epoch": 3, "epochs": 8, "loss": 0.51234, "accuracy": 0.8125, "eta_s": 75},
    )

    page = admin_client.get(run_url(run)).content.decode()
    progress = admin_client.get(reverse("admin:classifier_trainingrun_progress", args=[run.pk])).json()

    assert 'id="training-panel" data-status="running"' in page
    assert '<span class="value" id="training-progress">epoch 3/8</span>' in page
    assert ">Cancel run</button>" in page
    assert progress["progress_text"] == "epoch 3/8"
    assert (progress["loss"], progress["accuracy"], progress["eta"]) == ("0.5123", "81.2%", "1m15s")
    assert progress["finished"] is False


def test_the_progress_json_is_for_staff_only(client):
    run = TrainingRun.objects.create()

    response = client.get(reverse("admin:classifier_trainingrun_progress", args=[run.pk]))

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_cancelling_a_queued_run_ends_it_and_a_running_one_asks_the_worker_to_stop(admin_client):
    queued = TrainingRun.objects.create()
    running = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now())

    first = admin_client.post(reverse("admin:classifier_trainingrun_cancel", args=[queued.pk]), follow=True)
    second = admin_client.post(reverse("admin:classifier_trainingrun_cancel", args=[running.pk]), follow=True)

    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == TrainingRun.Status.CANCELLED
    assert running.status == TrainingRun.Status.RUNNING and running.cancel_requested
    assert messages_of(first) == [f"Training run {queued.pk} cancelled."]
    assert messages_of(second) == [f"Training run {running.pk} stops within a second or two."]
    assert re.search(r'id="cancel-form"\s+hidden', first.content.decode()), "no cancel button once it ended"


def test_a_run_without_two_categories_of_reviewed_photos_fails_clearly_and_keeps_the_active_version(
    reviewed, settings
):
    active = ModelVersion.objects.create(
        name="live", artifact_path="live", model_sha256="0" * 64, architecture="seed_dense", is_active=True
    )
    reviewed("Shirt", 4)
    reviewed("Sandal", 1)
    run = TrainingRun.objects.create(params={"architecture": "seed_dense", "epochs": 1, "image_size": 32})

    run = training_run_execute(run_id=run.pk)

    assert run.status == TrainingRun.Status.FAILED
    assert run.error == (
        "training needs reviewed photos in at least 2 active categories, 2 or more each "
        "(found Sandal: 1, Shirt: 4); accept or correct products in the review queue first. "
        "The active model version was not changed."
    )
    assert run.finished_at is not None and run.model_version is None
    assert list(ModelVersion.objects.values_list("name", "is_active")) == [(active.name, True)]


def test_a_run_on_unchanged_photos_and_settings_is_skipped_with_a_message(reviewed):
    reviewed("Shirt", 2)
    reviewed("Trouser", 2)
    params = {"architecture": "seed_dense", "epochs": 1, "image_size": 32, "base_dataset": ""}
    version = ModelVersion.objects.create(
        name="last", artifact_path="last", model_sha256="0" * 64, architecture="seed_dense"
    )
    last = TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED,
        params=params,
        data_fingerprint=training_set_collect().fingerprint,
        finished_at=timezone.now(),
        model_version=version,
    )
    run = TrainingRun.objects.create(params=params)

    run = training_run_execute(run_id=run.pk)

    assert run.status == TrainingRun.Status.SKIPPED
    assert run.message == (
        f"Skipped: the reviewed photos and the settings are the same as in run {last.pk}, which made last. "
        "Review or correct products, then retrain."
    )
    assert ModelVersion.objects.count() == 1


def test_a_correction_changes_what_the_next_run_trains_on(reviewed):
    shirts = reviewed("Shirt", 3)
    reviewed("Trouser", 2)
    before = training_set_collect().fingerprint

    Product.objects.filter(pk=shirts[0].pk).update(category=Category.objects.get(name="Trouser"))

    assert training_set_collect().fingerprint != before


def test_a_run_claimed_already_is_not_started_again():
    run = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now())

    assert training_run_execute(run_id=run.pk) is None

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING


def test_a_run_whose_worker_went_silent_is_swept_as_failed(settings):
    now = timezone.now()
    silent = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING, heartbeat_at=now - timedelta(minutes=30), worker="training@a"
    )
    alive = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING, heartbeat_at=now, worker="training@b"
    )

    assert training_runs_sweep(stale_after_s=600) == 1

    silent.refresh_from_db()
    alive.refresh_from_db()
    assert silent.status == TrainingRun.Status.FAILED
    assert silent.error.startswith("The training worker stopped during the run (no sign of life for 600 s).")
    assert alive.status == TrainingRun.Status.RUNNING


def test_a_restarted_worker_fails_the_runs_it_had_claimed():
    mine = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now(), worker="training@host"
    )
    other = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now(), worker="training@elsewhere"
    )

    assert training_runs_fail_orphaned(worker="training@host") == 1

    assert TrainingRun.objects.get(pk=mine.pk).status == TrainingRun.Status.FAILED
    assert TrainingRun.objects.get(pk=other.pk).status == TrainingRun.Status.RUNNING


def test_the_training_set_adds_a_base_data_set_under_the_shops_category_names(reviewed, settings, tmp_path):
    settings.VITRINE_DATASETS_DIR = tmp_path
    reviewed("Shirt", 2)
    reviewed("Trouser", 2)
    Category.objects.create(name="Sandal", slug="sandal", is_active=False)
    for split, folder, count in (("train", "shirt", 3), ("validation", "shirt", 1), ("train", "Sandal", 2)):
        (tmp_path / "base" / split / folder).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            (tmp_path / "base" / split / folder / f"{number}.png").write_bytes(photo_bytes(seed=number))

    training_set = training_set_collect(base_dataset="base")

    assert training_set.photos_per_category == {"Shirt": 6, "Trouser": 2}
    assert training_set.base_photos == 4, "the retired category's photos are left out"


def test_categories_with_too_few_photos_are_left_out_and_named(reviewed, settings):
    settings.VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY = 3
    reviewed("Shirt", 3)
    reviewed("Trouser", 3)
    reviewed("Hat", 1)
    reviewed("Retired", 3, is_active=False)

    training_set = training_set_collect()

    assert training_set.photos_per_category == {"Shirt": 3, "Trouser": 3}
    assert training_set.left_out == {"Hat": 1}


def test_labelled_files_are_split_stratified_and_seeded_with_duplicates_kept_once(tmp_path: pathlib.Path):
    files = []
    for label, count in (("Shirt", 10), ("Trouser", 20)):
        for number in range(count):
            path = tmp_path / f"{label}-{number}.png"
            path.write_bytes(photo_bytes(seed=number))
            files.append((path, label))
    (tmp_path / "broken.png").write_bytes(b"not a photo")
    files.append((tmp_path / "broken.png", "Shirt"))
    warnings: list[str] = []

    dataset = load_labelled_files(
        files, image_size=(16, 16), val_fraction=0.2, test_fraction=0.2, warn=warnings.append
    )
    again = load_labelled_files(
        files, image_size=(16, 16), val_fraction=0.2, test_fraction=0.2, warn=[].append
    )

    # Shirt's photos 0-9 have the same bytes as Trouser's 0-9: each is kept once, under its first label.
    assert dataset.class_names == ["Shirt", "Trouser"]
    assert len(dataset.skipped) == 11 and len(warnings) == 11
    total = len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test)
    assert total == 20
    assert np.bincount(dataset.y_test).tolist() == [2, 2] and np.bincount(dataset.y_val).tolist() == [2, 2]
    assert dataset.x_train.shape[1:] == (16, 16, 3)
    assert dataset.fingerprint == again.fingerprint


def test_labelled_files_of_one_class_are_refused(tmp_path: pathlib.Path):
    path = tmp_path / "a.png"
    path.write_bytes(photo_bytes())

    with pytest.raises(DatasetError, match="only one class"):
        load_labelled_files([(path, "Shirt")])


def test_a_bulk_job_needs_an_active_version(admin_client):
    response = admin_client.post(reverse("admin:classifier_bulkjob_start_all"), follow=True)

    assert messages_of(response) == [
        "no model version is active; activate one before re-classifying products"
    ]
    with pytest.raises(BulkJobError):
        bulk_job_create(products=None)
    assert not BulkJob.objects.exists()


def test_selected_products_are_re_classified_in_a_background_job(
    admin_client, reviewed, django_capture_on_commit_callbacks
):
    ModelVersion.objects.create(
        name="live", artifact_path="live", model_sha256="0" * 64, architecture="seed_dense", is_active=True
    )
    chosen = reviewed("Shirt", 3)[:2]

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            "/admin/catalog/product/",
            {
                "action": "reclassify_in_background",
                "_selected_action": [str(product.pk) for product in chosen],
            },
        )

    job = BulkJob.objects.get()
    assert response["Location"] == reverse("admin:classifier_bulkjob_change", args=[job.pk])
    assert (job.total, job.done, job.product_ids) == (2, 0, sorted(product.pk for product in chosen))
    assert [callback.keywords for callback in callbacks] == [{"job_id": job.pk, "cursor": 0}]
    page = admin_client.get(response["Location"]).content.decode()
    assert '<span class="value" id="bulk-progress">0/2</span>' in page


def test_a_stalled_bulk_job_is_sent_again_from_its_cursor(broker_queues):
    now = timezone.now()
    stalled = BulkJob.objects.create(
        status=BulkJob.Status.RUNNING, total=10, done=4, cursor=40, heartbeat_at=now - timedelta(minutes=10)
    )
    BulkJob.objects.create(status=BulkJob.Status.RUNNING, total=10, done=2, cursor=20, heartbeat_at=now)

    assert bulk_jobs_sweep(stale_after_s=300) == 1

    assert broker_queues.length("inference") == 1
    assert bulk_jobs_sweep(stale_after_s=300) == 0, "not sent again before another timeout"
    stalled.refresh_from_db()
    assert stalled.cursor == 40


def test_live_progress_counts_photos_while_a_backbone_computes_features(admin_client):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING,
        params={"epochs": 33},
        progress={"stage": "features", "photos": 640, "of": 3068, "elapsed_s": 40.0, "eta_s": 150.0},
    )

    progress = admin_client.get(reverse("admin:classifier_trainingrun_progress", args=[run.pk])).json()

    assert progress["progress_text"] == "features: photo 640/3068"


@pytest.mark.parametrize(
    ("model", "url_name"),
    [(TrainingRun, "admin:classifier_trainingrun_delete"), (BulkJob, "admin:classifier_bulkjob_delete")],
)
def test_work_a_worker_is_doing_cannot_be_deleted_but_finished_work_can(admin_client, model, url_name):
    running = model.objects.create(status=model.Status.RUNNING)
    finished = model.objects.create(status=model.Status.SUCCEEDED)

    assert admin_client.get(reverse(url_name, args=[running.pk])).status_code == 403
    assert admin_client.get(reverse(url_name, args=[finished.pk])).status_code == 200


def test_a_running_bulk_job_is_cancelled_from_its_page_and_can_then_be_deleted_or_resumed(
    admin_client, django_capture_on_commit_callbacks
):
    ModelVersion.objects.create(
        name="live", artifact_path="live", model_sha256="0" * 64, architecture="seed_dense", is_active=True
    )
    job = BulkJob.objects.create(status=BulkJob.Status.RUNNING, total=10, done=4, cursor=40)
    page_url = reverse("admin:classifier_bulkjob_change", args=[job.pk])
    cancel_url = reverse("admin:classifier_bulkjob_cancel", args=[job.pk])
    resume_url = reverse("admin:classifier_bulkjob_resume", args=[job.pk])
    page = admin_client.get(page_url).content.decode()
    assert f'action="{cancel_url}"' in page and resume_url not in page
    assert admin_client.get(cancel_url).status_code == 405, "a link or a prefetch cancels nothing"

    response = admin_client.post(cancel_url, follow=True)

    page = response.content.decode()
    assert f"Re-classification {job.pk} is cancelled: no further chunk is sent." in page
    assert '<span id="bulk-status">Cancelled</span>' in page
    assert f'action="{resume_url}"' in page
    assert admin_client.get(reverse("admin:classifier_bulkjob_delete", args=[job.pk])).status_code == 200

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        admin_client.post(resume_url)

    job.refresh_from_db()
    assert (job.status, job.cursor, job.done) == (BulkJob.Status.QUEUED, 40, 4)
    assert [callback.keywords for callback in callbacks] == [{"job_id": job.pk, "cursor": 40}]


def test_a_failed_bulk_job_shows_why_and_is_retried_from_its_cursor(
    admin_client, django_capture_on_commit_callbacks
):
    ModelVersion.objects.create(
        name="live", artifact_path="live", model_sha256="0" * 64, architecture="seed_dense", is_active=True
    )
    job = BulkJob.objects.create(
        status=BulkJob.Status.FAILED,
        total=10,
        done=4,
        cursor=40,
        error="At the products after id 40: The worker ran out of memory.",
    )

    page = admin_client.get(reverse("admin:classifier_bulkjob_change", args=[job.pk])).content.decode()
    assert "At the products after id 40: The worker ran out of memory." in page
    assert "Retry: resume where it stopped" in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(reverse("admin:classifier_bulkjob_resume", args=[job.pk]), follow=True)

    job.refresh_from_db()
    assert (job.status, job.error, job.cursor) == (BulkJob.Status.QUEUED, "", 40)
    assert [callback.keywords for callback in callbacks] == [{"job_id": job.pk, "cursor": 40}]
    assert f"Re-classification {job.pk} goes on from where it stopped." in response.content.decode()
    again = admin_client.post(reverse("admin:classifier_bulkjob_resume", args=[job.pk]), follow=True)
    assert "only a failed or cancelled one can be resumed" in again.content.decode()


def test_a_failed_product_is_retried_from_its_admin_page(
    admin_client, reviewed, django_capture_on_commit_callbacks
):
    product = reviewed("Shirt", 1)[0]
    Product.objects.filter(pk=product.pk).update(
        status=Product.Status.FAILED,
        classification_error="The worker died 3 times on this photo (out of memory or a crash).",
        classification_attempts=0,
    )
    page_url = reverse("admin:catalog_product_change", args=[product.pk])
    retry_url = reverse("admin:catalog_product_classify_again", args=[product.pk])
    page = admin_client.get(page_url).content.decode()
    assert "The worker died 3 times on this photo" in page
    assert f'action="{retry_url}"' in page

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(retry_url, follow=True)

    product.refresh_from_db()
    assert (product.status, product.classification_error) == (Product.Status.PENDING, "")
    assert [callback.keywords for callback in callbacks] == [{"product_ids": [product.pk]}]
    assert f"{product.name} is queued for classification." in response.content.decode()
    assert retry_url not in response.content.decode(), "offered for a failed product only"
