"""Bulk re-classification: a BulkJob row, classified chunk by chunk on the inference queue.

Keras-free: the admin starts jobs here; classifier.workers.inference classifies each chunk between
bulk_job_chunk_start() and bulk_job_chunk_finish(), outside any transaction.
"""

import bisect
import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from catalog.models import Product
from classifier.models import BulkJob
from classifier.selectors import model_version_active
from classifier.services.dispatch import CLASSIFY_PRODUCTS_CHUNK, task_send

logger = logging.getLogger(__name__)


class BulkJobError(ValueError):
    """A bulk re-classification that cannot start."""


@transaction.atomic
def bulk_job_create(
    *,
    products: Iterable[Product] | None = None,
    created_by: AbstractBaseUser | None = None,
    chunk_size: int | None = None,
) -> BulkJob:
    """Re-classifies `products` (None: every product there is now) with the active version, in the background.

    A person's category is never replaced; the job's progress is on its row. Raises BulkJobError when no
    version is active or nothing is chosen.
    """
    if model_version_active() is None:
        raise BulkJobError("no model version is active; activate one before re-classifying products")
    if products is None:
        last_product_id = Product.objects.aggregate(last=Max("pk"))["last"] or 0
        job = BulkJob(
            product_ids=None,
            last_product_id=last_product_id,
            total=Product.objects.filter(pk__lte=last_product_id).count(),
        )
    else:
        product_ids = sorted({product.pk for product in products})
        if not product_ids:
            raise BulkJobError("choose at least one product to re-classify")
        job = BulkJob(product_ids=product_ids, last_product_id=product_ids[-1], total=len(product_ids))
    job.chunk_size = chunk_size or settings.VITRINE_BULK_CHUNK_SIZE
    job.created_by = created_by
    job.save()
    transaction.on_commit(partial(bulk_job_enqueue, job_id=job.pk, cursor=0), robust=True)
    return job


def bulk_job_enqueue(*, job_id: int, cursor: int) -> bool:
    """Sends the job's chunk after `cursor` to the inference queue; False without a broker. Never raises."""
    return task_send(CLASSIFY_PRODUCTS_CHUNK, unsent=f"bulk job {job_id} waits", job_id=job_id, cursor=cursor)


def _bulk_job_next_ids(job: BulkJob) -> list[int]:
    if job.product_ids is None:
        return list(
            Product.objects.filter(pk__gt=job.cursor, pk__lte=job.last_product_id)
            .order_by("pk")
            .values_list("pk", flat=True)[: job.chunk_size]
        )
    start = bisect.bisect_right(job.product_ids, job.cursor)
    return job.product_ids[start : start + job.chunk_size]


@transaction.atomic
def bulk_job_chunk_start(*, job_id: int, cursor: int) -> list[int] | None:
    """The product ids of the job's chunk after `cursor`, marking the job running; None when there is nothing
    to do (the job is gone or over, or the message is a duplicate whose cursor the job is past)."""
    job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status not in (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING):
        return None
    if job.cursor != cursor:
        logger.info("bulk job %s is past %s already; duplicate message ignored", job_id, cursor)
        return None
    now = timezone.now()
    if job.status == BulkJob.Status.QUEUED:
        job.status = BulkJob.Status.RUNNING
        job.started_at = now
    job.heartbeat_at = now
    job.save(update_fields=["status", "started_at", "heartbeat_at"])
    return _bulk_job_next_ids(job)


def bulk_job_fail(*, job_id: int, error: str) -> None:
    now = timezone.now()
    BulkJob.objects.filter(pk=job_id).update(status=BulkJob.Status.FAILED, error=error, finished_at=now)
    logger.warning("bulk job %s failed: %s", job_id, error)


@transaction.atomic
def bulk_job_chunk_finish(*, job_id: int, cursor: int, product_ids: list[int], failed: int) -> BulkJob | None:
    """Moves the cursor past the classified chunk and sends the next one (or ends the job).

    A worker killed before this leaves the cursor where it was, and the redelivered message classifies the
    chunk again (each prediction is applied once). A cursor that moved meanwhile (a duplicate) is ignored.
    """
    job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status != BulkJob.Status.RUNNING or job.cursor != cursor:
        return None
    if product_ids:
        job.failed += failed
        job.cursor = product_ids[-1]
        if job.product_ids is None:
            job.done += len(product_ids)
        else:
            job.done = bisect.bisect_right(job.product_ids, job.cursor)
    job.heartbeat_at = timezone.now()
    if not product_ids or not _bulk_job_next_ids(job):
        job.status = BulkJob.Status.SUCCEEDED
        # Products deleted meanwhile count as done: everything that still exists was classified.
        job.done = job.total
        job.finished_at = job.heartbeat_at
    else:
        transaction.on_commit(partial(bulk_job_enqueue, job_id=job.pk, cursor=job.cursor), robust=True)
    job.save()
    logger.info("bulk job %s: %s/%s products (%s)", job.pk, job.done, job.total, job.status)
    return job


def bulk_jobs_sweep(*, stale_after_s: int | None = None) -> int:
    """Sends again the next chunk of jobs that stopped moving (a worker died and the message was lost)."""
    if stale_after_s is None:
        stale_after_s = settings.VITRINE_BULK_STALE_AFTER_S
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after_s)
    stale = BulkJob.objects.filter(status__in=(BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    )
    sent = 0
    for job_id, cursor in stale.values_list("pk", "cursor"):
        if not bulk_job_enqueue(job_id=job_id, cursor=cursor):
            break
        # Not sent again before another full timeout has passed.
        BulkJob.objects.filter(pk=job_id).update(heartbeat_at=now)
        sent += 1
    if sent:
        logger.info("sweep: %s stalled bulk jobs sent again from their cursor", sent)
    return sent
