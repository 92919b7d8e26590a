"""Celery tasks of the catalog, on the jobs queue: thin wrappers that fetch by id and call one service.

Web processes never import this module: they send these tasks by name (catalog.services.imports).
"""

from celery import shared_task
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from catalog.services.imports import product_import_chunk_run, product_import_fail, product_imports_sweep

# Errors that pass by themselves (database restarting, a lock held, broker reconnecting): retry with backoff.
IMPORT_TRANSIENT_ERRORS = (DatabaseOperationalError, DatabaseInterfaceError, BrokerOperationalError)


@shared_task(
    name="catalog.tasks.import_products_chunk",
    bind=True,
    acks_late=True,
    autoretry_for=IMPORT_TRANSIENT_ERRORS,
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
    except IMPORT_TRANSIENT_ERRORS:
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
