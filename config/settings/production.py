"""Production: everything from the environment, nothing insecure by default.

Required: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL, CELERY_BROKER_URL. Behind a proxy that
terminates TLS and sets X-Forwarded-Proto (the compose file's Caddy does). Every setting: .env.example.
"""

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    MIDDLEWARE,
    VITRINE_STORAGE,
    celery_broker_transport_options,
    env,
    logging_config,
    storages_config,
)

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY.strip():
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is empty; set it to 50 or more random characters")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is empty; name the host names the shop is served on")
# Origins allowed to post forms from another host, e.g. https://admin.example.com; the own host needs none.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# No embedded fallbacks: web and workers in separate containers must share one database and one broker.
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
# A connection kept across requests is tested first, so a restarted database costs no failed request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = celery_broker_transport_options(
    broker_url=CELERY_BROKER_URL, visibility_timeout_s=env.int("CELERY_VISIBILITY_TIMEOUT", default=7200)
)


def redis_cache_url_beside(*, broker_url: str) -> str:
    """The broker's Redis server, the next database (0 -> 1, 15 -> 0): cached keys never mix with queues."""
    parts = urlsplit(broker_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured("REDIS_CACHE_URL is empty and CELERY_BROKER_URL is not Redis; set it")
    database = int(parts.path.strip("/") or 0)
    return parts._replace(path=f"/{(database + 1) % 16}").geturl()


# One cache for every gunicorn process and container: the API's throttles count there, so the anonymous
# rate is VITRINE_API_ANON_RATE in all, not that much per process.
REDIS_CACHE_URL = env("REDIS_CACHE_URL", default="") or redis_cache_url_beside(broker_url=CELERY_BROKER_URL)
CACHES = {
    "default": {
        "BACKEND": "config.redis_cache.PooledRedisCache",
        "LOCATION": REDIS_CACHE_URL,
        # A Redis that does not answer fails the request within a second instead of holding a web process.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    },
    # A page takes tens of milliseconds to build: a cache slower than that is skipped (storefront_cache).
    "storefront": {
        "BACKEND": "config.redis_cache.PooledRedisCache",
        "LOCATION": REDIS_CACHE_URL,
        "KEY_PREFIX": "storefront",
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    },
}

# HTTPS: the proxy says which scheme the visitor used; everything else is redirected there.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# The container's own health probe speaks plain HTTP to gunicorn.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# Browsers remember HSTS: start low, raise to 31536000 (a year) once HTTPS is known to work.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Behind the proxy every connection comes from it: sign-in failures count per visitor address it forwards.
AXES_CLIENT_IP_CALLABLE = "config.proxy.client_ip_address"

# Static files from the web process itself, hashed names cached for ever; collected into the image at build.
MIDDLEWARE = [*MIDDLEWARE]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
STORAGES = storages_config(
    storage=VITRINE_STORAGE, staticfiles_backend="whitenoise.storage.CompressedManifestStaticFilesStorage"
)

# One JSON object per log line (DJANGO_LOG_FORMAT=plain for people reading a terminal).
LOGGING = logging_config(log_format=env("DJANGO_LOG_FORMAT", default="json"))
# Workers log through the same handler, so their lines are JSON too instead of Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
