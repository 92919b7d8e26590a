"""Bulk import of products: a CSV with a ZIP of photos, previewed, then imported in the background.

The preview checks every row and photo and saves nothing but the ProductImport row and the ZIP (through
Django's storage, so web and workers share it on S3 too). The job, on the jobs queue, creates or updates each
row by SKU through product_create / product_update, so every photo is checked and classified like a single
upload. Each row is imported in one transaction with the job's cursor: a redelivered task never imports a
row twice.
"""

import hashlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial

from celery import current_app
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from catalog.import_files import CsvRow, ImportFileError, PhotoArchive, RowProblem, csv_rows_read, price_parse
from catalog.models import Category, Product, ProductImport
from catalog.services.products import product_create, product_update
from catalog.validators import validate_product_image

logger = logging.getLogger(__name__)

IMPORT_PRODUCTS_CHUNK = "catalog.tasks.import_products_chunk"
IMPORT_IN_PROGRESS = (ProductImport.Status.QUEUED, ProductImport.Status.RUNNING)
FIELD_MAX_LENGTHS = {name: Product._meta.get_field(name).max_length for name in ("sku", "name")}
# The counters and error list a row's transaction writes; the rows themselves are read once per chunk.
JOB_PROGRESS_FIELDS = ("status", "cursor", "created", "updated", "unchanged", "failed", "import_errors")


class ProductImportError(ValueError):
    """An import that cannot start or stop now; the message says why in one line."""


@dataclass
class _Plan:
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"new": 0, "update": 0, "unchanged": 0})


def _check_size(file: File, *, limit: int, what: str) -> None:
    if file.size is not None and file.size > limit:
        raise ImportFileError(
            f"the {what} is {file.size / 1048576:.1f} MB; the limit is {limit / 1048576:.0f} MB"
        )


def _categories_by_name() -> dict[str, Category]:
    """Every category (retired ones too, to say so) by lower-case name and by slug."""
    categories = {}
    for category in Category.objects.all():
        categories[category.slug.lower()] = category
        categories[category.name.lower()] = category
    return categories


def _row_checked(
    csv_row: CsvRow,
    *,
    archive: PhotoArchive,
    categories: dict[str, Category],
    first_row_of_sku: dict[str, int],
) -> tuple[dict, str, list[str]]:
    """(the row to import, its photo's sha256, every reason it cannot be imported)."""
    values, reasons = csv_row.values, []
    if csv_row.problem:
        reasons.append(csv_row.problem)
    for column in ("sku", "name", "price", "image"):
        if not values.get(column):
            reasons.append(f"missing {column}")
    for column, limit in FIELD_MAX_LENGTHS.items():
        if len(values.get(column, "")) > limit:
            reasons.append(f"{column} is {len(values[column])} characters long; at most {limit}")
    sku, price, category, image_sha256 = values.get("sku", ""), None, None, ""
    if sku in first_row_of_sku:
        reasons.append(f"SKU {sku[:64]!r} repeated in the file (first on row {first_row_of_sku[sku]})")
    elif sku:
        first_row_of_sku[sku] = csv_row.row
    if values.get("price"):
        try:
            price = price_parse(values["price"])
        except RowProblem as problem:
            reasons.append(str(problem))
    if values.get("category"):
        category = categories.get(values["category"].lower())
        if category is None:
            reasons.append(f"unknown category {values['category'][:100]!r}")
        elif not category.is_active:
            reasons.append(f"category {category.name} is retired")
    if values.get("image"):
        try:
            image_sha256 = validate_product_image(archive.photo(values["image"]))
        except RowProblem as problem:
            reasons.append(str(problem))
        except ValidationError as error:
            reasons.extend(error.messages)
    row = {
        "row": csv_row.row,
        "sku": sku,
        "name": values.get("name", ""),
        "price": str(price),
        "description": values.get("description"),
        "category_id": category.pk if category is not None else None,
        "image": values.get("image", ""),
    }
    return row, image_sha256, reasons


def _row_action(row: dict, *, image_sha256: str, product: Product | None) -> str:
    if product is None:
        return "new"
    same = (
        product.name == row["name"]
        and product.price == Decimal(row["price"])
        and (row["description"] is None or product.description == row["description"])
        and (row["category_id"] is None or product.category_id == row["category_id"])
        and product.image_sha256 == image_sha256
    )
    return "unchanged" if same else "update"


def _plan(csv_rows: list[CsvRow], *, archive: PhotoArchive) -> _Plan:
    plan, categories, first_row_of_sku = _Plan(), _categories_by_name(), {}
    skus = {csv_row.values.get("sku", "") for csv_row in csv_rows}
    existing = {product.sku: product for product in Product.objects.filter(sku__in=skus)}
    for csv_row in csv_rows:
        row, image_sha256, reasons = _row_checked(
            csv_row, archive=archive, categories=categories, first_row_of_sku=first_row_of_sku
        )
        if reasons:
            plan.errors.append({"row": csv_row.row, "sku": row["sku"], "reasons": reasons})
            continue
        plan.counts[_row_action(row, image_sha256=image_sha256, product=existing.get(row["sku"]))] += 1
        plan.rows.append(row)
    return plan


def product_import_preview(
    *, csv_file: File, zip_file: File, created_by: AbstractBaseUser | None = None
) -> ProductImport:
    """Checks every row and photo and keeps the result, with the ZIP, for the job; no product is saved.

    Raises ImportFileError when a file as a whole cannot be imported (nothing is stored then).
    """
    _check_size(csv_file, limit=settings.VITRINE_IMPORT_MAX_CSV_BYTES, what="CSV")
    _check_size(zip_file, limit=settings.VITRINE_IMPORT_MAX_ZIP_BYTES, what="ZIP")
    csv_file.seek(0)
    csv_rows = csv_rows_read(data=csv_file.read(), max_rows=settings.VITRINE_IMPORT_MAX_ROWS)
    zip_file.seek(0)
    with PhotoArchive(
        zip_file,
        max_entries=settings.VITRINE_IMPORT_MAX_ZIP_ENTRIES,
        max_photo_bytes=settings.VITRINE_MAX_UPLOAD_BYTES,
    ) as archive:
        plan = _plan(csv_rows, archive=archive)
    zip_file.seek(0)
    product_import = ProductImport(
        csv_name=str(csv_file.name)[:255],
        zip_name=str(zip_file.name)[:255],
        rows=plan.rows,
        row_errors=plan.errors,
        new_count=plan.counts["new"],
        update_count=plan.counts["update"],
        unchanged_count=plan.counts["unchanged"],
        created_by=created_by,
    )
    # Kept only while there is something to import from it.
    if plan.rows:
        product_import.photos.save("photos.zip", zip_file, save=False)
    try:
        product_import.save()
    except Exception:
        if product_import.photos:
            product_import.photos.delete(save=False)
        raise
    return product_import


def _chunk_send(*, import_id: int, cursor: int) -> bool:
    """Publishes the chunk starting at `cursor`; False (logged) without a broker. Never raises."""
    try:
        current_app.send_task(IMPORT_PRODUCTS_CHUNK, kwargs={"import_id": import_id, "cursor": cursor})
    except Exception as error:  # Any failure to publish means the same thing: the import waits, queued.
        logger.warning(
            "product import %s waits at row %s: cannot reach the broker (%s)", import_id, cursor, error
        )
        return False
    return True


@transaction.atomic
def product_import_start(*, product_import: ProductImport) -> ProductImport:
    """The admin's "Import N products": queues the job that saves the previewed rows."""
    job = ProductImport.objects.select_for_update().get(pk=product_import.pk)
    if job.status != ProductImport.Status.PREVIEW:
        raise ProductImportError(f"import {job.pk} has already started ({job.get_status_display().lower()})")
    if not job.rows:
        raise ProductImportError(f"import {job.pk} has no row without errors: nothing to import")
    job.status = ProductImport.Status.QUEUED
    job.heartbeat_at = timezone.now()
    job.save(update_fields=["status", "heartbeat_at"])
    transaction.on_commit(partial(_chunk_send, import_id=job.pk, cursor=0), robust=True)
    return job


def _photos_delete_on_commit(job: ProductImport) -> None:
    if job.photos:
        transaction.on_commit(partial(job.photos.storage.delete, job.photos.name), robust=True)


@transaction.atomic
def product_import_cancel(*, product_import: ProductImport) -> ProductImport:
    """Stops a queued or running import after the row being saved; the rows saved so far stay."""
    job = ProductImport.objects.select_for_update().get(pk=product_import.pk)
    if job.status not in IMPORT_IN_PROGRESS:
        raise ProductImportError(f"import {job.pk} is not running ({job.get_status_display().lower()})")
    job.status = ProductImport.Status.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    _photos_delete_on_commit(job)
    return job


@transaction.atomic
def product_import_fail(*, import_id: int, error: str) -> ProductImport | None:
    """Ends a queued or running import as failed with `error` (the worker's task could not go on)."""
    job = (
        ProductImport.objects.select_for_update().filter(pk=import_id, status__in=IMPORT_IN_PROGRESS).first()
    )
    if job is None:
        return None
    job.status = ProductImport.Status.FAILED
    job.error = error
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    logger.warning("product import %s failed at row %s: %s", job.pk, job.cursor, error)
    return job


@transaction.atomic
def product_imports_delete(*, imports: Iterable[ProductImport]) -> int:
    """Deletes imports that are not running (a preview never imported, a finished one) and their ZIPs.

    Raises ProductImportError when one is queued or running: cancel it first.
    """
    jobs = list(ProductImport.objects.select_for_update().filter(pk__in=[job.pk for job in imports]))
    running = [job.pk for job in jobs if job.status in IMPORT_IN_PROGRESS]
    if running:
        raise ProductImportError(f"import {running[0]} is running; cancel it before deleting it")
    for job in jobs:
        _photos_delete_on_commit(job)
    ProductImport.objects.filter(pk__in=[job.pk for job in jobs]).delete()
    return len(jobs)


@contextmanager
def _archive_of(job: ProductImport) -> Iterator[PhotoArchive]:
    # A local copy: ZipFile seeks all over the file, which a remote storage object does badly.
    with tempfile.TemporaryFile() as local, job.photos.open("rb") as stored:
        for block in iter(lambda: stored.read(1 << 20), b""):
            local.write(block)
        with PhotoArchive(
            local,
            max_entries=settings.VITRINE_IMPORT_MAX_ZIP_ENTRIES,
            max_photo_bytes=settings.VITRINE_MAX_UPLOAD_BYTES,
        ) as archive:
            yield archive


def _row_save(row: dict, *, archive: PhotoArchive, created_by: AbstractBaseUser | None) -> str:
    """Creates or updates the row's product by SKU; "created", "updated" or "unchanged"."""
    photo = archive.photo(row["image"])
    category = None
    if row["category_id"] is not None:
        category = Category.objects.filter(pk=row["category_id"]).first()
        if category is None:
            raise RowProblem("its category was deleted after the preview")
    price = Decimal(row["price"])
    product = Product.objects.filter(sku=row["sku"]).first()
    if product is None:
        product_create(
            name=row["name"],
            sku=row["sku"],
            price=price,
            description=row["description"] or "",
            image=photo,
            category=category,
            created_by=created_by,
        )
        return "created"
    wanted = {"name": row["name"], "price": price}
    if row["description"] is not None:
        wanted["description"] = row["description"]
    changes = {name: value for name, value in wanted.items() if getattr(product, name) != value}
    if category is not None and product.category_id != category.pk:
        changes["category"] = category
    # A photo with the same bytes is left alone, so it is not classified again.
    if hashlib.sha256(photo.read()).hexdigest() != product.image_sha256:
        changes["image"] = photo
    photo.seek(0)
    if not changes:
        return "unchanged"
    product_update(product=product, updated_by=created_by, **changes)
    return "updated"


def _job_next_or_finish(job: ProductImport, *, chunk_end: int, total: int) -> None:
    """Called in the transaction that moved the cursor to `chunk_end`: exactly once per chunk."""
    if job.cursor >= total:
        job.status = ProductImport.Status.SUCCEEDED
        job.finished_at = timezone.now()
        _photos_delete_on_commit(job)
        logger.info("product import %s done: %s created, %s updated", job.pk, job.created, job.updated)
    else:
        transaction.on_commit(partial(_chunk_send, import_id=job.pk, cursor=chunk_end), robust=True)


def _row_import(
    job_id: int,
    *,
    index: int,
    row: dict,
    chunk_end: int,
    total: int,
    archive: PhotoArchive,
    created_by: AbstractBaseUser | None,
) -> bool:
    """Imports row `index` with the cursor moving past it; False when the job stopped or moved past it."""
    with transaction.atomic():
        job = ProductImport.objects.select_for_update().only(*JOB_PROGRESS_FIELDS, "photos").get(pk=job_id)
        if job.status != ProductImport.Status.RUNNING or job.cursor != index:
            return False
        try:
            outcome = _row_save(row, archive=archive, created_by=created_by)
        except (ValidationError, RowProblem) as error:
            reasons = error.messages if isinstance(error, ValidationError) else [str(error)]
            job.failed += 1
            job.import_errors = [
                *job.import_errors,
                {"row": row["row"], "sku": row["sku"], "reasons": reasons},
            ]
        else:
            setattr(job, outcome, getattr(job, outcome) + 1)
        job.cursor = index + 1
        job.heartbeat_at = timezone.now()
        if job.cursor in (chunk_end, total):
            _job_next_or_finish(job, chunk_end=chunk_end, total=total)
        job.save(update_fields=[*JOB_PROGRESS_FIELDS, "heartbeat_at", "finished_at"])
    return True


def product_import_chunk_run(*, import_id: int, cursor: int) -> ProductImport | None:
    """Imports the rows of the chunk starting at `cursor` (the task's one call), then sends the next chunk.

    A redelivered message goes on from the job's cursor inside its chunk; one whose chunk the job is past, or
    a job cancelled or gone, does nothing (None).
    """
    chunk_end = cursor + settings.VITRINE_IMPORT_CHUNK_SIZE
    with transaction.atomic():
        job = ProductImport.objects.select_for_update().filter(pk=import_id).first()
        if job is None or job.status not in IMPORT_IN_PROGRESS or not cursor <= job.cursor < chunk_end:
            logger.info("product import %s: nothing to do for the chunk at row %s", import_id, cursor)
            return None
        now = timezone.now()
        if job.status == ProductImport.Status.QUEUED:
            job.status = ProductImport.Status.RUNNING
            job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.save(update_fields=["status", "started_at", "heartbeat_at"])
    total = len(job.rows)
    chunk_end = min(chunk_end, total)
    created_by = job.created_by
    with _archive_of(job) as archive:
        for index in range(job.cursor, chunk_end):
            row = job.rows[index]
            if not _row_import(
                job.pk,
                index=index,
                row=row,
                chunk_end=chunk_end,
                total=total,
                archive=archive,
                created_by=created_by,
            ):
                break
    job.refresh_from_db()
    return job


def product_imports_sweep(*, stale_after_s: int | None = None) -> int:
    """Sends again the chunk of imports that stopped moving (the message was lost: a broker outage at start,
    a worker gone with it); each row is still imported once, under its cursor."""
    if stale_after_s is None:
        stale_after_s = settings.VITRINE_IMPORT_STALE_AFTER_S
    now = timezone.now()
    stale = ProductImport.objects.filter(
        status__in=IMPORT_IN_PROGRESS, heartbeat_at__lt=now - timedelta(seconds=stale_after_s)
    )
    sent = 0
    for import_id, cursor in stale.values_list("pk", "cursor"):
        if not _chunk_send(import_id=import_id, cursor=cursor):
            break
        # Not sent again before another full timeout has passed.
        ProductImport.objects.filter(pk=import_id).update(heartbeat_at=now)
        sent += 1
    if sent:
        logger.info("sweep: %s stalled product imports sent again from their cursor", sent)
    return sent
