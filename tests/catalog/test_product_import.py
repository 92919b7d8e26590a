"""Bulk import in the admin: preview with per-row errors, then create-or-update by SKU in a background job.

The job's service runs here directly, on real Postgres and Redis; tests/e2e/test_product_import.py runs it
through a Celery worker on the jobs queue.
"""

import base64
import io
import json
import re
import warnings
import zipfile
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from catalog.import_files import ImportFileError
from catalog.models import Product, ProductImport
from catalog.services.imports import (
    product_import_chunk_run,
    product_import_preview,
    product_import_start,
    product_imports_sweep,
)
from catalog.tasks import import_products_chunk
from tests.catalog.imports import HEADER, catalog_files, csv_upload, small_png, zip_upload
from tests.e2e.support import broker_unreachable

pytestmark = pytest.mark.django_db
CLASSIFY_PRODUCTS = "classifier.tasks.classify_products"


@pytest.fixture
def broker() -> redis.Redis:
    """The tests' broker database, its queues emptied before and after."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queues = [settings.VITRINE_INFERENCE_QUEUE, settings.VITRINE_JOBS_QUEUE]
    client.delete(*queues)
    yield client
    client.delete(*queues)


def classification_requests(broker: redis.Redis) -> list[int]:
    """The product ids of every classification message waiting on the inference queue."""
    product_ids = []
    for raw in broker.lrange(settings.VITRINE_INFERENCE_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == CLASSIFY_PRODUCTS:
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            product_ids += kwargs["product_ids"]
    return product_ids


def run_job(job: ProductImport, capture) -> ProductImport:
    """Runs the chunks one after the other, as the worker would from the messages each chunk sends."""
    for _chunk in range(job.total + 1):
        job.refresh_from_db()
        if job.status not in (ProductImport.Status.QUEUED, ProductImport.Status.RUNNING):
            return job
        with capture(execute=True):
            product_import_chunk_run(import_id=job.pk, cursor=job.cursor)
    raise AssertionError(f"import {job.pk} did not end")


def broken_catalog() -> tuple[SimpleUploadedFile, SimpleUploadedFile, dict[int, str]]:
    """500 rows, 20 of them broken (5 each: missing photo, bad price, duplicate SKU, corrupt image), and the
    spreadsheet row number of each broken row with a piece of its expected reason."""
    rows, photos = catalog_files(500)
    broken: dict[int, str] = {}
    bad_prices = ["12.5.0", "abc", "€10", "-3", "1,000.00"]
    for number in range(5):
        missing, price, duplicate, corrupt = (100 * number + offset for offset in (10, 30, 50, 70))
        rows[missing][5] = f"nowhere-{number}.png"
        broken[missing + 2] = f"photo 'nowhere-{number}.png' is not in the ZIP"
        rows[price][2] = bad_prices[number]
        broken[price + 2] = f"bad price {bad_prices[number]!r}"
        rows[duplicate][0] = rows[duplicate - 1][0]
        broken[duplicate + 2] = f"repeated in the file (first on row {duplicate + 1})"
        photos[f"photos/p{corrupt:04d}.png"] = small_png(corrupt)[:40]
        broken[corrupt + 2] = f"p{corrupt:04d}.png: a damaged PNG file"
    return csv_upload(rows), zip_upload(photos), broken


def test_preview_lists_exactly_the_broken_rows_and_the_job_saves_the_others_classified_once(
    admin_client, broker, django_capture_on_commit_callbacks
) -> None:
    csv_file, zip_file, broken = broken_catalog()
    response = admin_client.post(
        reverse("admin:catalog_productimport_upload"), {"csv_file": csv_file, "zip_file": zip_file}
    )
    job = ProductImport.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:catalog_productimport_change", args=[job.pk])
    assert {error["row"] for error in job.row_errors} == set(broken)
    for error in job.row_errors:
        assert len(error["reasons"]) == 1
        assert broken[error["row"]] in error["reasons"][0], error
    assert (job.new_count, job.update_count, job.unchanged_count, job.total) == (480, 0, 0, 480)
    assert Product.objects.count() == 0

    page = admin_client.get(response.url).content.decode()
    assert page.count('<tr><td class="number">') == 20
    assert "Import 480 products" in page and "nowhere-3.png" in page

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:catalog_productimport_start", args=[job.pk]))
    assert broker.llen(settings.VITRINE_JOBS_QUEUE) == 1
    job = run_job(job, django_capture_on_commit_callbacks)

    assert (job.status, job.cursor, job.created, job.updated, job.failed) == ("succeeded", 480, 480, 0, 0)
    assert Product.objects.count() == 480
    assert not Product.objects.filter(sku__in=[f"BULK-{row - 2:04d}" for row in broken]).exists()
    requested = classification_requests(broker)
    assert sorted(requested) == sorted(Product.objects.values_list("pk", flat=True))
    assert not job.photos.storage.exists(job.photos.name)
    page = admin_client.get(reverse("admin:catalog_productimport_change", args=[job.pk])).content.decode()
    assert '<span class="value" id="import-created">480</span>' in page


def preview(rows: list[list[str]], photos: dict[str, bytes], **csv_options) -> ProductImport:
    return product_import_preview(csv_file=csv_upload(rows, **csv_options), zip_file=zip_upload(photos))


def test_a_redelivered_chunk_imports_no_row_twice(
    broker, django_capture_on_commit_callbacks, settings
) -> None:
    settings.VITRINE_IMPORT_CHUNK_SIZE = 2
    rows, photos = catalog_files(3)
    job = product_import_start(product_import=preview(rows, photos))
    with django_capture_on_commit_callbacks(execute=True):
        product_import_chunk_run(import_id=job.pk, cursor=0)
    # The same message again, as after a worker died before acknowledging it: the job is past its chunk.
    with django_capture_on_commit_callbacks(execute=True):
        assert product_import_chunk_run(import_id=job.pk, cursor=0) is None
    job = run_job(job, django_capture_on_commit_callbacks)
    assert (job.status, job.created, job.updated, job.unchanged) == ("succeeded", 3, 0, 0)
    assert Product.objects.count() == 3
    assert sorted(classification_requests(broker)) == sorted(Product.objects.values_list("pk", flat=True))
    # Only one message per chunk was ever sent: the duplicate sent nothing on.
    assert broker.llen(settings.VITRINE_JOBS_QUEUE) == 1


def test_a_redelivery_in_the_middle_of_a_chunk_goes_on_from_the_cursor(
    broker, django_capture_on_commit_callbacks, settings
) -> None:
    settings.VITRINE_IMPORT_CHUNK_SIZE = 10
    rows, photos = catalog_files(4)
    job = product_import_start(product_import=preview(rows, photos))
    # As if a worker committed rows 0 and 1 of the chunk and was killed before acknowledging its message.
    ProductImport.objects.filter(pk=job.pk).update(status="running", cursor=2, created=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = product_import_chunk_run(import_id=job.pk, cursor=0)
    assert (job.status, job.cursor, job.created) == ("succeeded", 4, 4)
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["BULK-0002", "BULK-0003"]


def test_update_by_sku_reclassifies_only_a_changed_photo(
    broker, django_capture_on_commit_callbacks, make_product, category
) -> None:
    rows, photos = catalog_files(3)
    with django_capture_on_commit_callbacks(execute=True):
        kept = make_product(
            sku="BULK-0000",
            name="Product 0",
            price=Decimal("1.50"),
            image=SimpleUploadedFile("p.png", photos["photos/p0000.png"]),
        )
        repriced = make_product(
            sku="BULK-0001",
            name="Product 1",
            price=Decimal("9.99"),
            image=SimpleUploadedFile("p.png", photos["photos/p0001.png"]),
        )
        rephotographed = make_product(sku="BULK-0002", name="Product 2", price=Decimal("3.50"))
    broker.delete(settings.VITRINE_INFERENCE_QUEUE)
    rows[1][4] = "shirt"  # by slug; the name works too, in any case
    job = preview(rows, photos)
    assert (job.new_count, job.update_count, job.unchanged_count, job.row_errors) == (0, 2, 1, [])
    job = run_job(product_import_start(product_import=job), django_capture_on_commit_callbacks)
    assert (job.created, job.updated, job.unchanged, job.failed) == (0, 2, 1, 0)
    assert Product.objects.count() == 3
    repriced.refresh_from_db()
    assert (repriced.price, repriced.category, repriced.category_source) == (
        Decimal("2.50"),
        category,
        "person",
    )
    assert classification_requests(broker) == [rephotographed.pk]
    assert kept.image_sha256 == Product.objects.get(pk=kept.pk).image_sha256


def test_a_row_failing_at_import_time_is_recorded_and_the_others_go_on(
    broker, django_capture_on_commit_callbacks, category
) -> None:
    rows, photos = catalog_files(3)
    rows[1][4] = "Shirt"
    job = product_import_start(product_import=preview(rows, photos))
    category.delete()
    job = run_job(job, django_capture_on_commit_callbacks)
    assert (job.status, job.created, job.failed) == ("succeeded", 2, 1)
    assert job.import_errors == [
        {"row": 3, "sku": "BULK-0001", "reasons": ["its category was deleted after the preview"]}
    ]


def test_bom_upper_case_headers_comma_prices_and_the_reasons_of_other_rows() -> None:
    rows, photos = catalog_files(6)
    rows[0][2] = "12,50"
    rows[1][4] = "No such category"
    rows[2][1] = ""
    rows[3][1] = "x" * 201
    rows[4][5] = "../p0004.png"
    job = preview(rows, photos, header=[name.upper() for name in HEADER], prefix=b"\xef\xbb\xbf")
    assert job.rows[0]["price"] == "12.50"
    assert [(error["row"], error["reasons"]) for error in job.row_errors] == [
        (3, ["unknown category 'No such category'"]),
        (4, ["missing name"]),
        (5, ["name is 201 characters long; at most 200"]),
        (6, ["photo '../p0004.png' is not in the ZIP"]),
    ]
    assert (job.new_count, job.total) == (2, 2)


def zip_with_entries(entries: list[tuple[str, bytes]]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    # A duplicated entry name is the point of one case; zipfile warns while writing it.
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore", UserWarning)
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data)
    return SimpleUploadedFile("photos.zip", buffer.getvalue())


@pytest.mark.parametrize(
    ("csv_bytes", "zip_entries", "message"),
    [
        (None, [("../../etc/p0000.png", b"x")], "points outside the archive"),
        (None, [("/tmp/p0000.png", b"x")], "points outside the archive"),
        (None, [("p0000.png", b"x"), ("p0000.png", b"y")], "holds 'p0000.png' twice"),
        (b"sku;name\n", [], "unknown column(s) 'sku;name'"),
        (b"sku,name,price\n", [], "the header has no image column"),
        ("sku,name,price,image\nA,Caf\xe9,1,a.png\n".encode("latin-1"), [], "the CSV is not UTF-8"),
        (b"sku,name,price,image\n", [], "no product rows"),
        ("sku,name,price,image\n" + "A,B,1,a.png\n" * 4, [], "more than 3 rows"),
    ],
)
def test_a_file_refused_as_a_whole_stores_nothing(
    settings, stored_files, csv_bytes, zip_entries, message
) -> None:
    settings.VITRINE_IMPORT_MAX_ROWS = 3
    if isinstance(csv_bytes, str):
        csv_bytes = csv_bytes.encode()
    csv_file = (
        SimpleUploadedFile("p.csv", csv_bytes) if csv_bytes is not None else csv_upload(catalog_files(1)[0])
    )
    with pytest.raises(ImportFileError, match=re.escape(message)):
        product_import_preview(csv_file=csv_file, zip_file=zip_with_entries(zip_entries))
    assert not ProductImport.objects.exists()
    assert stored_files() == []


def test_not_a_zip_is_shown_on_the_upload_form(admin_client) -> None:
    response = admin_client.post(
        reverse("admin:catalog_productimport_upload"),
        {
            "csv_file": csv_upload(catalog_files(1)[0]),
            "zip_file": SimpleUploadedFile("photos.zip", b"not a zip"),
        },
    )
    assert response.status_code == 200
    assert "the photos file is not a readable ZIP archive" in response.content.decode()
    assert not ProductImport.objects.exists()


def test_a_zip_bomb_photo_is_refused_without_unpacking_it(settings) -> None:
    settings.VITRINE_MAX_UPLOAD_BYTES = 1024 * 1024
    rows, _photos = catalog_files(1)
    job = preview(rows, {"p0000.png": b"\0" * (50 * 1024 * 1024)})
    assert job.row_errors == [
        {"row": 2, "sku": "BULK-0000", "reasons": ["photo 'p0000.png' is over the 1 MB limit"]}
    ]


def test_only_editors_who_may_add_and_change_products_may_import(client) -> None:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_product", "add_product"]))
    client.force_login(user)
    assert client.get(reverse("admin:catalog_productimport_upload")).status_code == 403
    assert "Import products" not in client.get(reverse("admin:catalog_product_changelist")).content.decode()
    user.user_permissions.add(Permission.objects.get(codename="change_product"))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    assert client.get(reverse("admin:catalog_productimport_upload")).status_code == 200
    assert "Import products" in client.get(reverse("admin:catalog_product_changelist")).content.decode()


def test_an_import_whose_message_was_lost_is_sent_again_by_the_sweep(
    broker, django_capture_on_commit_callbacks
) -> None:
    rows, photos = catalog_files(2)
    job = preview(rows, photos)
    with broker_unreachable(current_app), django_capture_on_commit_callbacks(execute=True):
        product_import_start(product_import=job)
    assert broker.llen(settings.VITRINE_JOBS_QUEUE) == 0
    assert product_imports_sweep(stale_after_s=60) == 0
    ProductImport.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=2))
    assert product_imports_sweep(stale_after_s=60) == 1
    assert broker.llen(settings.VITRINE_JOBS_QUEUE) == 1
    assert run_job(job, django_capture_on_commit_callbacks).created == 2


def test_cancel_stops_the_import_and_keeps_the_rows_saved_so_far(
    admin_client, broker, django_capture_on_commit_callbacks, settings
) -> None:
    settings.VITRINE_IMPORT_CHUNK_SIZE = 2
    rows, photos = catalog_files(5)
    job = product_import_start(product_import=preview(rows, photos))
    with django_capture_on_commit_callbacks(execute=True):
        product_import_chunk_run(import_id=job.pk, cursor=0)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:catalog_productimport_cancel", args=[job.pk]))
    assert product_import_chunk_run(import_id=job.pk, cursor=2) is None
    job.refresh_from_db()
    assert (job.status, job.cursor, Product.objects.count()) == ("cancelled", 2, 2)
    assert not job.photos.storage.exists(job.photos.name)


def test_the_zip_is_kept_in_the_bucket_with_s3_storage(in_bucket, broker, django_capture_on_commit_callbacks):
    rows, photos = catalog_files(3)
    job = preview(rows, photos)
    assert in_bucket.keys(prefix="media/imports/") == [f"media/{job.photos.name}"]
    job = run_job(product_import_start(product_import=job), django_capture_on_commit_callbacks)
    assert (job.status, job.created) == ("succeeded", 3)
    assert in_bucket.keys(prefix="media/imports/") == []


def test_deleting_a_preview_removes_its_zip_and_a_running_import_cannot_be_deleted(
    admin_client, broker, django_capture_on_commit_callbacks
) -> None:
    rows, photos = catalog_files(1)
    unused, running = preview(rows, photos), preview(rows, photos)
    product_import_start(product_import=running)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:catalog_productimport_delete", args=[unused.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert not unused.photos.storage.exists(unused.photos.name)
    assert list(ProductImport.objects.values_list("pk", flat=True)) == [running.pk]
    assert (
        admin_client.get(reverse("admin:catalog_productimport_delete", args=[running.pk])).status_code == 403
    )


def test_the_pages_an_editor_sees(admin_client, stored_files) -> None:
    upload = admin_client.get(reverse("admin:catalog_productimport_upload")).content.decode()
    assert 'enctype="multipart/form-data"' in upload and "12.50 or 12,50" in upload
    rows, photos = catalog_files(2)
    rows[0][2] = rows[1][2] = "free"
    nothing_to_import = preview(rows, photos)
    assert (nothing_to_import.total, stored_files()) == (0, [])
    page = admin_client.get(reverse("admin:catalog_productimport_change", args=[nothing_to_import.pk]))
    assert "Import 0 products" not in page.content.decode()
    running = preview(*catalog_files(2))
    ProductImport.objects.filter(pk=running.pk).update(status="running", cursor=1, created=1)
    page = admin_client.get(reverse("admin:catalog_productimport_change", args=[running.pk])).content.decode()
    assert 'id="cancel-import"' in page and "setTimeout(poll, 1000)" in page
    progress = admin_client.get(reverse("admin:catalog_productimport_progress", args=[running.pk])).json()
    assert progress | {"status_display": ""} == {
        "status": "running",
        "status_display": "",
        "done": 1,
        "total": 2,
        "percent": 50,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "failed": 0,
        "error": "",
        "finished": False,
    }


def test_a_job_whose_zip_is_gone_ends_failed_with_the_reason(broker) -> None:
    rows, photos = catalog_files(2)
    job = product_import_start(product_import=preview(rows, photos))
    job.photos.storage.delete(job.photos.name)
    with pytest.raises(FileNotFoundError):
        import_products_chunk(import_id=job.pk, cursor=0)
    job.refresh_from_db()
    assert (job.status, job.created) == ("failed", 0)
    assert job.error.startswith("In the chunk from row 1 of the import: FileNotFoundError")
