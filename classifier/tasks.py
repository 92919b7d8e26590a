"""Celery tasks of the classifier: thin wrappers that fetch by id and call one function.

Web processes never import this module: they send these tasks by name (classifier.services.dispatch).
The worker-side modules load TensorFlow, so each task imports its module when it first runs: a Celery parent
imports this file before it forks its pool, and TensorFlow must not be loaded there.
"""

import logging

from celery import Task, shared_task
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_received, worker_ready
from celery.utils.time import get_exponential_backoff_interval
from celery_batches import Batches, SimpleRequest
from django.conf import settings
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.db import connections
from kombu.exceptions import OperationalError as BrokerOperationalError

from catalog.queues import task_send
from catalog.services.classification import products_classification_fail
from classifier.services.bulk import bulk_job_fail, bulk_jobs_sweep
from classifier.services.classification import products_sweep_stuck
from classifier.services.dispatch import CLASSIFY_PRODUCTS
from classifier.services.drift import drift_alerts_record
from classifier.services.training import training_runs_fail_orphaned, training_runs_sweep
from classifier.workers import recovery

logger = logging.getLogger(__name__)
# Errors that pass by themselves (database restarting, a lock held, broker reconnecting): retry with backoff.
TRANSIENT_ERRORS = (DatabaseOperationalError, DatabaseInterfaceError, BrokerOperationalError)
# Their retry policy, shared by the inference tasks: jittered exponential backoff, at most a minute apart.
RETRY_TRANSIENT_ERRORS = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 6,
}


def failure_text(task: Task, error: Exception) -> str:
    """Why a task failed, in the words the admin and the API show."""
    if isinstance(error, SoftTimeLimitExceeded):
        return f"Stopped at its time limit of {task.soft_time_limit} s."
    if isinstance(error, MemoryError):
        return "The worker ran out of memory."
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _classification_retry(requests: list[SimpleRequest], *, error: Exception) -> None:
    """Sends each message of a batch that met a transient error again, later (jittered exponential backoff);
    past max_retries its products stay queued for the sweep. The batch's messages are acknowledged after."""
    for request in requests:
        retries = (request.request_dict or {}).get("retries") or 0
        product_ids = request.kwargs["product_ids"]
        if retries >= RETRY_TRANSIENT_ERRORS["max_retries"]:
            logger.warning(
                "products %s: gave up retrying (%r); the sweep sends them again", product_ids, error
            )
            continue
        countdown = get_exponential_backoff_interval(
            factor=1, retries=retries, maximum=RETRY_TRANSIENT_ERRORS["retry_backoff_max"], full_jitter=True
        )
        if task_send(
            CLASSIFY_PRODUCTS,
            unsent=f"products {product_ids} stay queued for the sweep",
            options={"countdown": countdown, "retries": retries + 1},
            product_ids=product_ids,
        ):
            logger.warning("products %s: Retry in %ss: %r", product_ids, countdown, error)


class InferenceBatches(Batches):
    """celery-batches that waits for more messages while they keep coming.

    The worker reads waiting messages one by one; a batch is flushed when it is full, or at a tick of its
    timer (every flush_interval) that found no message more than the tick before, so a backlog fills batches
    and a lone photo waits one tick. The timer starts at the first message after a flush: celery-batches' own
    repeating one would be overdue after a long batch and flush the next with whatever single message came.
    """

    # Messages buffered at the last tick that did not flush; a lone message flushes at the first tick.
    _seen_waiting = 1

    def _do_flush(self) -> None:
        waiting = self._buffer.qsize()
        if self._seen_waiting < waiting < self.flush_every:
            self._seen_waiting = waiting
            return
        self._seen_waiting = 1
        super()._do_flush()

    def flush(self, requests: list) -> object:
        try:
            return super().flush(requests)
        finally:
            # Messages with an ETA (retries) wait on the timer; without any, the next message starts it again.
            if self._tref is not None and self._pending.qsize() == 0:
                self._tref.cancel()
                self._tref = None


# A batch task (celery-batches): the worker hands it every message it holds, up to a batch, after waiting
# VITRINE_INFERENCE_BATCH_WAIT_MS for more. Each message is acknowledged only once the batch returned: a
# worker killed mid-batch leaves all of them to be delivered again. The web still sends one per product.
@shared_task(
    name=CLASSIFY_PRODUCTS,
    base=InferenceBatches,
    bind=True,
    acks_late=True,
    flush_every=settings.VITRINE_INFERENCE_BATCH_SIZE,
    flush_interval=settings.VITRINE_INFERENCE_BATCH_WAIT_MS / 1000,
)
def classify_products(self, requests: list[SimpleRequest]) -> None:
    from classifier.workers import inference  # loads TensorFlow: in the serving process only

    deliveries = [
        inference.Delivery(
            product_ids=request.kwargs["product_ids"],
            redelivered=bool((request.delivery_info or {}).get("redelivered")),
        )
        for request in requests
    ]
    try:
        inference.deliveries_classify(deliveries=deliveries)
    except TRANSIENT_ERRORS as error:
        _classification_retry(requests, error=error)
    except Exception as error:
        # Not transient: running it again would fail the same way, so the products still waiting end failed
        # (and the batch fails, for the worker's log).
        products_classification_fail(
            product_ids=[product_id for delivery in deliveries for product_id in delivery.product_ids],
            error=failure_text(self, error),
        )
        raise


@shared_task(name="classifier.tasks.sweep_stuck_products", acks_late=True)
def sweep_stuck_products() -> int:
    return products_sweep_stuck()


# Acknowledged on receipt, unlike the others: a training outlives the broker's visibility timeout, and a
# message still unacknowledged then would be delivered again. A run whose worker died is swept as failed.
@shared_task(
    name="classifier.tasks.train_model",
    bind=True,
    acks_late=False,
    soft_time_limit=settings.VITRINE_TRAINING_TIME_LIMIT_S,
    time_limit=settings.VITRINE_TRAINING_TIME_LIMIT_S + 60,
)
def train_model(self, run_id: int) -> None:
    from classifier.workers import training  # loads TensorFlow: in the pool's child only

    training.training_run_execute(run_id=run_id, worker=self.request.hostname or "")


@shared_task(
    name="classifier.tasks.classify_products_chunk",
    bind=True,
    acks_late=True,
    **RETRY_TRANSIENT_ERRORS,
    soft_time_limit=300,
    time_limit=360,
)
def classify_products_chunk(self, job_id: int, cursor: int) -> None:
    from classifier.workers import inference  # loads TensorFlow: in the serving process only

    try:
        inference.bulk_job_chunk_classify(job_id=job_id, cursor=cursor)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        # Not transient: the chunk is not written, and the job ends failed at its cursor (resumable).
        bulk_job_fail(job_id=job_id, error=f"At the products after id {cursor}: {failure_text(self, error)}")
        raise


@shared_task(name="classifier.tasks.record_drift_alerts", acks_late=True)
def record_drift_alerts() -> int:
    return len(drift_alerts_record())


@shared_task(name="classifier.tasks.sweep_background_jobs", acks_late=True)
def sweep_background_jobs() -> dict:
    return {"training_runs_failed": training_runs_sweep(), "bulk_jobs_resent": bulk_jobs_sweep()}


@worker_ready.connect
def _load_model_before_first_product(sender: object, **kwargs: object) -> None:
    # A prefork parent must not load TensorFlow before it forks; children load the model at first use.
    consumed = {queue.name for queue in sender.task_consumer.queues}
    if settings.VITRINE_INFERENCE_QUEUE in consumed and not isinstance(sender.pool, PreforkPool):
        from classifier.workers import runtime  # this process serves: loading TensorFlow here is the point

        runtime.warm_up()
        # Outside a task nothing closes it; an idle connection would not survive a database restart.
        connections.close_all()


@worker_ready.connect
def _prefetch_a_batch(sender: object, **kwargs: object) -> None:
    # A batch fills only from delivered messages: the solo inference worker holds up to a batch unacknowledged
    # (one process, so its prefetch count is the multiplier; kept across reconnections).
    consumed = {queue.name for queue in sender.task_consumer.queues}
    if settings.VITRINE_INFERENCE_QUEUE in consumed and not isinstance(sender.pool, PreforkPool):
        sender.prefetch_multiplier = settings.VITRINE_INFERENCE_BATCH_SIZE
        sender.initial_prefetch_count = sender.max_prefetch_count
        sender.qos.value = sender.initial_prefetch_count
        sender.qos.update()


@worker_ready.connect
def _sweep_background_jobs_at_start(sender: object, **kwargs: object) -> None:
    # A restarted worker cannot still be training what it claimed before; stalled bulk jobs go on.
    consumed = {queue.name for queue in sender.task_consumer.queues}
    if settings.VITRINE_TRAINING_QUEUE in consumed:
        training_runs_fail_orphaned(worker=sender.hostname)
        training_runs_sweep()
    if settings.VITRINE_INFERENCE_QUEUE in consumed:
        bulk_jobs_sweep()
    # A prefork parent must not hand its database connection down to the children it forks later.
    connections.close_all()


@worker_ready.connect
def _watch_deliveries(sender: object, **kwargs: object) -> None:
    # Every inference worker (a prefork one in its parent): what it holds is given back within seconds if it
    # dies (Redis only); the thread touches no TensorFlow, so a prefork parent may run it.
    consumed = {queue.name for queue in sender.task_consumer.queues}
    if settings.VITRINE_INFERENCE_QUEUE in consumed:
        recovery.delivery_watch_start(
            app=sender.app, hostname=sender.hostname, queue=settings.VITRINE_INFERENCE_QUEUE
        )


@task_received.connect
def _note_delivery_holder(sender: object, request: object, **kwargs: object) -> None:
    recovery.delivery_held(request.message.delivery_tag)
