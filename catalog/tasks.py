"""Celery tasks of the catalog (queue VITRINE_JOBS_QUEUE): thin, each fetches by id and calls one service.

Web processes never import this module: they send these tasks by name (catalog.queues.task_send).
"""

from celery import shared_task
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from catalog.services.imports import product_import_chunk_run, product_import_fail, product_imports_sweep
from catalog.services.webhooks import webhook_deliveries_sweep, webhook_delivery_attempt

# Errors that pass by themselves (database restarting, a lock held, broker reconnecting): retry with backoff.
# A webhook receiver's failure is not one of them: the service retries it on its own schedule.
TRANSIENT_ERRORS = (DatabaseOperationalError, DatabaseInterfaceError, BrokerOperationalError)


@shared_task(
    name="catalog.tasks.deliver_webhook",
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=6,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_webhook(delivery_id: int) -> None:
    webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="catalog.tasks.sweep_webhook_deliveries", acks_late=True)
def sweep_webhook_deliveries() -> int:
    return webhook_deliveries_sweep()


@shared_task(
    name="catalog.tasks.import_products_chunk",
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=6,
    soft_time_limit=300,
    time_limit=360,
)
def import_products_chunk(self, import_id: int, cursor: int) -> None:
    try:
        product_import_chunk_run(import_id=import_id, cursor=cursor)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        # Not transient (the ZIP is gone from storage...): running it again would fail the same way.
        product_import_fail(
            import_id=import_id,
            error=f"In the chunk from row {cursor + 1} of the import: {type(error).__name__}: {error}",
        )
        raise


@shared_task(name="catalog.tasks.sweep_product_imports", acks_late=True)
def sweep_product_imports() -> int:
    return product_imports_sweep()
