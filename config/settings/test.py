"""The test suite: real PostgreSQL and Redis on this machine unless the environment names others."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import celery_broker_transport_options, env

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/vitrine")}
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
# Off for the suite, whose tests count on-commit callbacks and SQL queries one write or read at a time;
# tests/catalog/api/test_storefront_cache.py turns it on.
VITRINE_API_CACHE_SECONDS = env.int("VITRINE_API_CACHE_SECONDS", default=0)
# The storefront's pages in the broker's own Redis database, so parallel test runs on other databases never
# share a catalog generation; the throttle's counts stay in memory, per test process.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "storefront": {
        "BACKEND": "config.redis_cache.PooledRedisCache",
        "LOCATION": env("REDIS_CACHE_URL", default=CELERY_BROKER_URL),
        "KEY_PREFIX": "storefront",
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    },
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Short visibility: a killed worker's task is redelivered within seconds (tests/e2e); tasks take < 1 s here.
CELERY_BROKER_TRANSPORT_OPTIONS = celery_broker_transport_options(
    broker_url=CELERY_BROKER_URL, visibility_timeout_s=env.int("CELERY_VISIBILITY_TIMEOUT", default=5)
)
# Models trained by tests and their workers (both read this) stay out of the repository's var/.
VITRINE_MODELS_DIR = env.path(
    "VITRINE_MODELS_DIR", default=Path(tempfile.gettempdir()) / "vitrine-test-models"
)
# A retrain in tests is one epoch of the smallest model on small photos: seconds.
VITRINE_RETRAIN_ARCH = "seed_dense"
VITRINE_RETRAIN_EPOCHS = 1
VITRINE_RETRAIN_IMAGE_SIZE = 32
VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY = 2
