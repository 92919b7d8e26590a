"""Celery tasks of the catalog (queue VITRINE_JOBS_QUEUE): thin, each fetches by id and calls one service.

Web processes never import this module: they send these tasks by name (catalog.queues.task_send).
"""

from celery import shared_task
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError

from catalog.services.webhooks import webhook_deliveries_sweep, webhook_delivery_attempt

# The database restarting or a lock held: try again with backoff (a receiver's failure is retried by the
# service itself, on its own schedule).
TRANSIENT_ERRORS = (DatabaseOperationalError, DatabaseInterfaceError)


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
