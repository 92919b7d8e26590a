"""Bulk re-classification on a real worker: every product (or a chosen few) classified again with the active
version in chunks, with progress on the job's row, and going on from its cursor after a worker died."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product
from classifier.models import BulkJob, ModelVersion
from classifier.services.bulk import bulk_jobs_sweep
from tests.e2e.slow_worker import slow_tasks_env
from tests.e2e.support import CeleryWorker, Workers, photo_bytes, product_saved_without_queueing, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DONE_WITHIN_S = 60


@pytest.fixture
def catalog_products() -> list[Product]:
    """Seven products with photos, in id order, none classified yet (as after importing a catalog)."""
    return [
        product_saved_without_queueing(name=f"item-{number}", image_bytes=photo_bytes(seed=number))
        for number in range(7)
    ]


def progress_of(client, job: BulkJob) -> dict:
    return client.get(reverse("admin:classifier_bulkjob_progress", args=[job.pk])).json()


def wait_until_done(client, job: BulkJob) -> dict:
    return wait_for(
        lambda: (progress := progress_of(client, job))["finished"] and progress,
        timeout_s=DONE_WITHIN_S,
        what=f"bulk job {job.pk} to end",
        interval_s=0.2,
    )


def test_re_classify_all_files_every_product_with_the_active_version_in_chunks(
    admin_client,
    settings,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    catalog_products: list[Product],
):
    settings.VITRINE_BULK_CHUNK_SIZE = 3
    persons_choice = Category.objects.create(name="Gifts", slug="gifts")
    Product.objects.filter(pk=catalog_products[0].pk).update(
        category=persons_choice, category_source=Product.CategorySource.PERSON
    )

    response = admin_client.post(reverse("admin:classifier_bulkjob_start_all"))
    job = BulkJob.objects.get()
    final = wait_until_done(admin_client, job)

    assert response["Location"] == reverse("admin:classifier_bulkjob_change", args=[job.pk])
    assert (final["status"], final["progress_text"], final["failed"]) == ("succeeded", "7/7", 0)
    products = Product.objects.order_by("pk")
    assert all(product.model_version == active_model_version for product in products)
    assert all(
        product.status in (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW) for product in products
    )
    assert products[0].category == persons_choice, "a person's category is never replaced"
    job.refresh_from_db()
    assert job.cursor == catalog_products[-1].pk
    page = admin_client.get(response["Location"]).content.decode()
    assert 'id="bulk-panel" data-status="succeeded"' in page and ">7/7</span>" in page


def test_a_job_left_half_done_by_a_dead_worker_goes_on_from_its_cursor_after_the_sweep(
    admin_client,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    catalog_products: list[Product],
):
    # What a worker killed after its third product leaves: a running job and its cursor, no message, no news.
    chosen = catalog_products[1:]
    job = BulkJob.objects.create(
        status=BulkJob.Status.RUNNING,
        product_ids=[product.pk for product in chosen],
        last_product_id=chosen[-1].pk,
        total=len(chosen),
        done=3,
        cursor=chosen[2].pk,
        chunk_size=2,
        started_at=timezone.now() - timedelta(minutes=10),
        heartbeat_at=timezone.now() - timedelta(minutes=10),
    )

    assert bulk_jobs_sweep(stale_after_s=60) == 1
    final = wait_until_done(admin_client, job)

    assert (final["status"], final["progress_text"]) == ("succeeded", "6/6")
    classified = set(Product.objects.filter(model_version=active_model_version).values_list("pk", flat=True))
    assert classified == {product.pk for product in chosen[3:]}, "only the products after the cursor"


def test_a_job_whose_worker_is_killed_mid_job_is_finished_by_the_next_worker(
    admin_client,
    settings,
    workers: Workers,
    active_model_version: ModelVersion,
    catalog_products: list[Product],
):
    settings.VITRINE_BULK_CHUNK_SIZE = 2
    workers.stop_all()
    slow_worker = workers.start(
        app="tests.e2e.slow_worker", extra_env=slow_tasks_env(classifier__tasks__classify_products_chunk=2)
    )
    admin_client.post(reverse("admin:classifier_bulkjob_start_all"))
    job = BulkJob.objects.get()
    wait_for(
        lambda: slow_worker.log().count(f'"job_id": {job.pk}}})') >= 2,
        timeout_s=DONE_WITHIN_S,
        what="the slow worker to finish one chunk and start the next",
    )

    slow_worker.kill()

    job.refresh_from_db()
    assert (job.status, job.done) == (BulkJob.Status.RUNNING, 2)
    workers.start()
    final = wait_until_done(admin_client, job)
    assert (final["status"], final["progress_text"]) == ("succeeded", "7/7")
    assert Product.objects.filter(model_version=active_model_version).count() == 7
