"""Bulk re-classification: a BulkJob row, classified chunk by chunk on the inference queue.

Keras-free: the admin starts, cancels and resumes jobs here; classifier.workers.inference classifies each
chunk between bulk_job_chunk_start() and bulk_job_chunk_finish(), outside any transaction.
"""

import bisect
import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.translation import gettext

from catalog.models import Product
from catalog.queues import task_send
from classifier.models import BulkJob
from classifier.selectors import JOB_IN_PROGRESS, model_version_active
from classifier.services.dispatch import CLASSIFY_PRODUCTS_CHUNK

logger = logging.getLogger(__name__)


class BulkJobError(ValueError):
    """A bulk re-classification that cannot start, stop or resume; the message says why in one line."""


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
        raise BulkJobError(gettext("no model version is active; activate one before re-classifying products"))
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
            raise BulkJobError(gettext("choose at least one product to re-classify"))
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
def bulk_job_chunk_start(*, job_id: int, cursor: int, max_attempts: int) -> list[int] | None:
    """The product ids of the job's chunk after `cursor`, marking the job running; None when there is nothing
    to do (the job is gone, over or cancelled, or the message is a duplicate whose cursor the job is past).

    Each start is counted until the chunk finishes: when the chunk's last `max_attempts` deliveries never
    ended (each killed its worker), the job fails instead of running it again.
    """
    job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status not in JOB_IN_PROGRESS:
        return None
    if job.cursor != cursor:
        logger.info("bulk job %s is past %s already; duplicate message ignored", job_id, cursor)
        return None
    if job.chunk_attempts >= max_attempts:
        _bulk_job_failed(
            job,
            error=f"The worker died {job.chunk_attempts} times on this chunk (the products after id "
            f"{cursor}; out of memory or a crash). Resume the job to try it again.",
        )
        return None
    now = timezone.now()
    if job.status == BulkJob.Status.QUEUED:
        job.status = BulkJob.Status.RUNNING
        job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.chunk_attempts += 1
    job.save(update_fields=["status", "started_at", "heartbeat_at", "chunk_attempts"])
    return _bulk_job_next_ids(job)


def bulk_job_chunk_release(*, job_id: int, cursor: int) -> int:
    """The delivery of the chunk after `cursor` ended without killing its worker: it counts no more."""
    return BulkJob.objects.filter(pk=job_id, cursor=cursor, chunk_attempts__gt=0).update(
        chunk_attempts=F("chunk_attempts") - 1
    )


def _bulk_job_failed(job: BulkJob, *, error: str) -> None:
    job.status = BulkJob.Status.FAILED
    job.error = error
    job.chunk_attempts = 0
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "chunk_attempts", "finished_at"])
    logger.warning("bulk job %s failed at cursor %s: %s", job.pk, job.cursor, error)


@transaction.atomic
def bulk_job_fail(*, job_id: int, error: str) -> BulkJob | None:
    """Fails the job with `error` while it is in progress (one cancelled or over stays so); None otherwise."""
    job = BulkJob.objects.select_for_update().filter(pk=job_id, status__in=JOB_IN_PROGRESS).first()
    if job is not None:
        _bulk_job_failed(job, error=error)
    return job


@transaction.atomic
def bulk_job_cancel(*, job: BulkJob) -> BulkJob:
    """Stops a queued or running job: no further chunk is sent (a chunk being classified finishes)."""
    job = BulkJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in JOB_IN_PROGRESS:
        raise BulkJobError(
            gettext("re-classification %(job)s has already ended (%(status)s)")
            % {"job": job.pk, "status": job.get_status_display().lower()}
        )
    job.status = BulkJob.Status.CANCELLED
    job.chunk_attempts = 0
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "chunk_attempts", "finished_at"])
    logger.info("bulk job %s cancelled at %s/%s", job.pk, job.done, job.total)
    return job


@transaction.atomic
def bulk_job_resume(*, job: BulkJob) -> BulkJob:
    """Sends a failed or cancelled job on from its cursor (the chunk that failed is tried again)."""
    job = BulkJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in (BulkJob.Status.FAILED, BulkJob.Status.CANCELLED):
        raise BulkJobError(
            gettext("re-classification %(job)s is %(status)s; only a failed or cancelled one can be resumed")
            % {"job": job.pk, "status": job.get_status_display().lower()}
        )
    if model_version_active() is None:
        raise BulkJobError(
            gettext("no model version is active; activate one before resuming the re-classification")
        )
    job.status = BulkJob.Status.QUEUED
    job.error = ""
    job.chunk_attempts = 0
    job.finished_at = None
    job.heartbeat_at = timezone.now()
    job.save(update_fields=["status", "error", "chunk_attempts", "finished_at", "heartbeat_at"])
    transaction.on_commit(partial(bulk_job_enqueue, job_id=job.pk, cursor=job.cursor), robust=True)
    return job


@transaction.atomic
def bulk_job_chunk_finish(*, job_id: int, cursor: int, product_ids: list[int], failed: int) -> BulkJob | None:
    """Moves the cursor past the classified chunk and sends the next one (or ends the job).

    A worker killed before this leaves the cursor where it was, and the redelivered message classifies the
    chunk again (each prediction is applied once). A cursor that moved meanwhile (a duplicate) is ignored.
    """
    job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status != BulkJob.Status.RUNNING or job.cursor != cursor:
        return None
    job.chunk_attempts = 0
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
