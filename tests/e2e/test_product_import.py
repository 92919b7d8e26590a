"""Bulk import through a real worker on the jobs queue: the previewed rows are saved in chunks, and each new
product is classified once by the same worker's inference queue, like a single upload."""

import pytest
from django.urls import reverse

from catalog.models import DONE_STATUSES, Product, ProductImport
from classifier.models import ModelVersion, Prediction
from tests.catalog.imports import catalog_files, csv_upload, zip_upload
from tests.e2e.support import CeleryWorker, Workers, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROWS = 60  # more than one chunk of the default VITRINE_IMPORT_CHUNK_SIZE (50)
DONE_WITHIN_S = 90


def test_the_import_job_saves_the_previewed_rows_and_each_product_is_classified_once(
    admin_client, workers: Workers, celery_worker: CeleryWorker, active_model_version: ModelVersion
) -> None:
    rows, photos = catalog_files(ROWS, sku_prefix="E2E")
    rows[5][2] = "ten euros"
    rows[7][5] = "missing.png"
    admin_client.post(
        reverse("admin:catalog_productimport_upload"),
        {"csv_file": csv_upload(rows), "zip_file": zip_upload(photos)},
    )
    job = ProductImport.objects.get()
    assert [error["row"] for error in job.row_errors] == [7, 9]

    admin_client.post(reverse("admin:catalog_productimport_start", args=[job.pk]))
    progress_url = reverse("admin:catalog_productimport_progress", args=[job.pk])
    final = wait_for(
        lambda: (progress := admin_client.get(progress_url).json())["finished"] and progress,
        timeout_s=DONE_WITHIN_S,
        what=f"import {job.pk} to end",
        interval_s=0.2,
    )
    assert (final["status"], final["done"], final["created"], final["failed"]) == ("succeeded", 58, 58, 0)
    wait_for(
        lambda: Product.objects.filter(status__in=DONE_STATUSES).count() == ROWS - 2,
        timeout_s=DONE_WITHIN_S,
        what="every imported product to be classified",
        interval_s=0.2,
    )
    assert Product.objects.count() == ROWS - 2
    assert Prediction.objects.count() == ROWS - 2
    # Classified exactly once each: one prediction applied per product in the worker's log.
    product_ids = list(Product.objects.values_list("pk", flat=True))
    assert [workers.applied_count(product_id) for product_id in product_ids] == [1] * len(product_ids)
