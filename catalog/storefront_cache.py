"""The storefront's shared page cache and the catalog generation that is part of every page's key.

The generation is a random token in the "storefront" cache, replaced whenever a product or a category is
written: by save() and delete() (receivers connected in catalog.apps) and by the writes that send no signals
(QuerySet.update, bulk_create, bulk_update: catalog.models.CatalogQuerySet). Pages cached under an older
token are never read again, so every web process, the admin and the Celery worker invalidate one another
through the cache they share. A random token, not a counter: a generation key lost to eviction or a Redis
restart can never come back as a value that old pages were stored under.

Any failure of the cache is logged and answered as a miss: the API serves from the database without it.
"""

import logging
import time
import uuid

from django.conf import settings
from django.core.cache import caches
from django.db import transaction

logger = logging.getLogger(__name__)

STOREFRONT_CACHE = "storefront"
GENERATION_KEY = "catalog-generation"
# After a failed read, this process leaves the cache alone this long: an unreachable Redis costs one timeout.
RETRY_AFTER_S = 5.0

_reads_paused_until = 0.0


def storefront_cache_enabled() -> bool:
    return settings.VITRINE_API_CACHE_SECONDS > 0


def _reads_paused() -> bool:
    return time.monotonic() < _reads_paused_until


def _read_failed(error: Exception) -> None:
    global _reads_paused_until
    _reads_paused_until = time.monotonic() + RETRY_AFTER_S
    logger.warning("storefront cache unavailable, serving without it for %.0f s: %s", RETRY_AFTER_S, error)


def catalog_generation() -> str | None:
    """The current generation token; None when the cache is off or cannot be reached."""
    if not storefront_cache_enabled() or _reads_paused():
        return None
    try:
        return caches[STOREFRONT_CACHE].get_or_set(GENERATION_KEY, lambda: uuid.uuid4().hex, timeout=None)
    except Exception as error:  # any backend's failure (Redis, files) means no cache
        _read_failed(error)
        return None


def storefront_page_get(*, key: str) -> object | None:
    if _reads_paused():
        return None
    try:
        return caches[STOREFRONT_CACHE].get(key)
    except Exception as error:  # any backend's failure is a miss
        _read_failed(error)
        return None


def storefront_page_set(*, key: str, page: object) -> None:
    if _reads_paused():
        return
    try:
        caches[STOREFRONT_CACHE].set(key, page, timeout=settings.VITRINE_API_CACHE_SECONDS)
    except Exception as error:  # a page not kept is only a later miss
        _read_failed(error)


def catalog_generation_replace() -> None:
    try:
        caches[STOREFRONT_CACHE].set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception as error:  # the write stands; pages expire on their own
        logger.error("storefront cache not invalidated (pages may be stale until they expire): %s", error)


def catalog_changed(*, using: str) -> None:
    """A product or category row changed on database `using`: no cached page may be served from now on.

    Replaced now, so this transaction's own reads (and tests that never commit) see the change, and again
    after commit, since another process may have cached the old rows under the first new token meanwhile.
    """
    if not storefront_cache_enabled():
        return
    catalog_generation_replace()
    transaction.on_commit(catalog_generation_replace, using=using, robust=True)
