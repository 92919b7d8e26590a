"""The test suite: real PostgreSQL and Redis on this machine unless the environment names others."""

from .base import *  # noqa: F403
from .base import celery_broker_transport_options, env

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/vitrine")}
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Short visibility: a killed worker's task is redelivered within seconds (tests/e2e); tasks take < 1 s here.
CELERY_BROKER_TRANSPORT_OPTIONS = celery_broker_transport_options(
    broker_url=CELERY_BROKER_URL, visibility_timeout_s=env.int("CELERY_VISIBILITY_TIMEOUT", default=5)
)
