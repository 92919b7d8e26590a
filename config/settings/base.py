"""Settings shared by every environment; each value can come from the environment (django-environ)."""

import math
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import lazy
from django.utils.translation import ngettext

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "catalog",
    "classifier",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Before CommonMiddleware, so its redirects and errors carry the CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    # After sessions, before CommonMiddleware: the browser's Accept-Language picks the language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Needs the signed-in user: a language chosen on the admin's Language page wins over the browser's.
    "catalog.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns django-axes' lockout of a sign-in into its answer (429 and the message below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Embedded default: SQLite in var/. Set DATABASE_URL for PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A fresh clone has no var/ yet: SQLite creates the file, not the folder it goes in.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web and worker write at once: wait for the lock instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Sign-in (the admin's login form, anything calling authenticate()): django-axes refuses a username from an
# address after AXES_FAILURE_LIMIT wrong passwords in a row, for AXES_COOLOFF_MINUTES; a right password before
# the limit signs in and clears the count. Failures are kept in the database, shared by every web process.
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out pair is refused before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# Username and address together: someone elsewhere guessing an admin's password cannot lock that admin out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Its start-up banner would go to every command's stderr, ahead of the one line a command owes its user.
AXES_VERBOSE = False


def _cooloff_message(minutes: int) -> str:
    return ngettext(
        "Too many failed sign-ins for this username from your address. Try again in %(minutes)d minute.",
        "Too many failed sign-ins for this username from your address. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


# Lazy: worded in the language of the request that is refused (LocaleMiddleware), not at start-up.
AXES_COOLOFF_MESSAGE = lazy(_cooloff_message, str)(int(AXES_COOLOFF_TIME.total_seconds() // 60))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# English unless the person's choice (admin, Language) or their browser asks for Brazilian Portuguese.
LANGUAGE_CODE = "en"
# Each language named in its own words, so a person finds theirs whatever the page's language.
LANGUAGES = [("en", "English"), ("pt-br", "Português (Brasil)")]
# One catalog for the project's own strings; Django's admin brings its own pt_BR.
LOCALE_PATHS = [BASE_DIR / "config" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=VAR_DIR / "media")

# Upload limits: Django refuses bigger request bodies before our validators run.
VITRINE_MAX_UPLOAD_BYTES = env.int("VITRINE_MAX_UPLOAD_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = VITRINE_MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Photos are served without metadata; on, the uploaded bytes (EXIF, GPS) are also kept, never served
# (catalog.photos.ORIGINALS_PREFIX under MEDIA_ROOT, hidden by config/media.py and docker/Caddyfile).
VITRINE_KEEP_ORIGINAL_PHOTOS = env.bool("VITRINE_KEEP_ORIGINAL_PHOTOS", default=False)

# Where photos and model artifacts live. "filesystem" (the embedded default): MEDIA_ROOT and
# VITRINE_MODELS_DIR on this machine. "s3": one S3-compatible bucket (django-storages), photos under media/
# and each model version's files under models/<sha256>/; every host reads them through the storage API, no
# disk is shared.
STORAGE_CHOICES = ("filesystem", "s3")
MEDIA_URL_CHOICES = ("signed", "public")


def storages_config(*, storage: str, staticfiles_backend: str) -> dict:
    """Django's STORAGES for the chosen storage; with "s3", an "artifacts" storage for model versions too."""
    staticfiles = {"BACKEND": staticfiles_backend}
    if storage == "filesystem":
        return {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": staticfiles,
        }
    if storage not in STORAGE_CHOICES:
        raise ImproperlyConfigured(
            f"VITRINE_STORAGE must be one of {', '.join(STORAGE_CHOICES)}, not {storage!r}"
        )
    bucket = env("AWS_STORAGE_BUCKET_NAME", default="")
    if not bucket:
        raise ImproperlyConfigured(
            "VITRINE_STORAGE is s3 but AWS_STORAGE_BUCKET_NAME is empty; name the bucket"
        )
    media_urls = env("VITRINE_MEDIA_URLS", default="signed")
    if media_urls not in MEDIA_URL_CHOICES:
        raise ImproperlyConfigured(
            f"VITRINE_MEDIA_URLS must be one of {', '.join(MEDIA_URL_CHOICES)}, not {media_urls!r}"
        )
    endpoint_url = env("AWS_S3_ENDPOINT_URL", default="") or None
    bucket_options = {
        "bucket_name": bucket,
        "endpoint_url": endpoint_url,
        "region_name": env("AWS_S3_REGION_NAME", default="us-east-1"),
        "access_key": env("AWS_ACCESS_KEY_ID", default="") or None,
        "secret_key": env("AWS_SECRET_ACCESS_KEY", default="") or None,
        "signature_version": "s3v4",
        # MinIO and other self-hosted servers answer at one host name, not one per bucket.
        "addressing_style": env("AWS_S3_ADDRESSING_STYLE", default="path" if endpoint_url else "auto"),
    }
    media = {
        **bucket_options,
        "location": "media",
        # Photos are saved under new random names; a name taken is never overwritten.
        "file_overwrite": False,
        "querystring_auth": media_urls == "signed",
        "querystring_expire": env.int("AWS_QUERYSTRING_EXPIRE", default=3600),
        "custom_domain": (env("AWS_S3_CUSTOM_DOMAIN", default="") or None)
        if media_urls == "public"
        else None,
        "url_protocol": env("AWS_S3_URL_PROTOCOL", default="https:"),
    }
    # Content-addressed (models/<sha256>/): the same name always holds the same bytes.
    artifacts = {**bucket_options, "location": "models", "file_overwrite": True}
    return {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": media},
        "artifacts": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": artifacts},
        "staticfiles": staticfiles,
    }


VITRINE_STORAGE = env("VITRINE_STORAGE", default="filesystem")
STORAGES = storages_config(
    storage=VITRINE_STORAGE, staticfiles_backend="django.contrib.staticfiles.storage.StaticFilesStorage"
)

# Classifier
# With VITRINE_STORAGE=s3: this machine's own cache of the model versions it fetched from the bucket.
VITRINE_MODELS_DIR = env.path("VITRINE_MODELS_DIR", default=VAR_DIR / "models")
# The most a model_import may write to disk (the archive's files together), so an archive cannot fill it.
VITRINE_MODEL_IMPORT_MAX_BYTES = env.int("VITRINE_MODEL_IMPORT_MAX_BYTES", default=2 * 1024**3)
VITRINE_DATASETS_DIR = env.path("VITRINE_DATASETS_DIR", default=BASE_DIR.parent / "shared" / "datasets")
# Only the built-in data sets' local files and the Keras cache: classifier.ml never downloads then.
VITRINE_OFFLINE = env.bool("VITRINE_OFFLINE", default=False)
# Train in mixed_bfloat16 (True) or float32 (False); unset: decided from the hardware (GPU, bfloat16 CPU).
VITRINE_MIXED_PRECISION = env.bool("VITRINE_MIXED_PRECISION", default=None)


def confidence_threshold(raw: str) -> float:
    """A confidence at which predictions file products: above 0 (0 would file anything), at most 1."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ImproperlyConfigured(
            f"VITRINE_CONFIDENCE_THRESHOLD must be a number above 0 and at most 1, not {raw!r}"
        )
    return value


VITRINE_CONFIDENCE_THRESHOLD = confidence_threshold(env("VITRINE_CONFIDENCE_THRESHOLD", default="0.95"))
# Rows left pending/queued longer than this are re-enqueued by the sweep.
VITRINE_STUCK_AFTER_SECONDS = env.int("VITRINE_STUCK_AFTER_SECONDS", default=120)
# A photo (or a bulk chunk) whose worker died this many times is failed instead of delivered again.
VITRINE_MAX_DELIVERIES = env.int("VITRINE_MAX_DELIVERIES", default=3)
# Seconds one inference (reading a batch's photos and running the model) may take before its products fail.
VITRINE_INFERENCE_DEADLINE_S = env.float("VITRINE_INFERENCE_DEADLINE_S", default=60.0)


def bounded_number(name: str, raw: str, *, low: float, high: float, kind: type = int) -> float:
    """The setting `name` as a `kind` between low and high inclusive; refuses anything else by name."""
    try:
        value = kind(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name} must be a number from {low:g} to {high:g}, not {raw!r}")
    return value


# Photos waiting for the inference worker are classified in one forward pass, this many at most; the worker
# holds as many messages unacknowledged (its prefetch), since a batch fills only from delivered messages.
# At most 64: the serving code's chunk (classifier.ml.serving.SERVING_CHUNK).
VITRINE_INFERENCE_BATCH_SIZE = bounded_number(
    "VITRINE_INFERENCE_BATCH_SIZE", env("VITRINE_INFERENCE_BATCH_SIZE", default="16"), low=1, high=64
)
# How long a worker that holds fewer photos than a batch waits for more before classifying them.
VITRINE_INFERENCE_BATCH_WAIT_MS = bounded_number(
    "VITRINE_INFERENCE_BATCH_WAIT_MS",
    env("VITRINE_INFERENCE_BATCH_WAIT_MS", default="5"),
    low=1,
    high=1000,
    kind=float,
)
# Possible duplicates (catalog.services.duplicates), flagged for a person, never refused: a photo whose
# perceptual hash differs from another product's in at most this many of 64 bits...
VITRINE_DUPLICATE_HASH_DISTANCE = bounded_number(
    "VITRINE_DUPLICATE_HASH_DISTANCE", env("VITRINE_DUPLICATE_HASH_DISTANCE", default="10"), low=0, high=32
)
# ...or whose embedding has at least this cosine similarity with another product's (same model version).
VITRINE_DUPLICATE_SIMILARITY = bounded_number(
    "VITRINE_DUPLICATE_SIMILARITY",
    env("VITRINE_DUPLICATE_SIMILARITY", default="0.93"),
    low=0,
    high=1,
    kind=float,
)
# The review queue proposes a new category for photos of no known category ("unfamiliar") that look alike: at
# least this many whose embeddings' mean pairwise cosine similarity is at least this (classifier.ml.clusters).
VITRINE_PROPOSE_SIMILARITY = bounded_number(
    "VITRINE_PROPOSE_SIMILARITY",
    env("VITRINE_PROPOSE_SIMILARITY", default="0.65"),
    low=0,
    high=1,
    kind=float,
)
VITRINE_PROPOSE_MIN_PHOTOS = bounded_number(
    "VITRINE_PROPOSE_MIN_PHOTOS", env("VITRINE_PROPOSE_MIN_PHOTOS", default="3"), low=2, high=100
)
# "Retrain now" in the admin: the recipe a one-click run uses (the settings page can change it per run).
# The pretrained EfficientNet-Lite2 at its input size (260 px); without its wheel, vitrine_cnn from scratch.
VITRINE_RETRAIN_ARCH = env("VITRINE_RETRAIN_ARCH", default="effnet_lite2")
# Empty: the architecture's own number of epochs.
VITRINE_RETRAIN_EPOCHS = env.int("VITRINE_RETRAIN_EPOCHS", default=None)
VITRINE_RETRAIN_IMAGE_SIZE = env.int("VITRINE_RETRAIN_IMAGE_SIZE", default=260)
# A photo folder under VITRINE_DATASETS_DIR trained on beside the reviewed products; "" for none.
VITRINE_RETRAIN_BASE_DATASET = env("VITRINE_RETRAIN_BASE_DATASET", default="")
# Categories with fewer reviewed photos than this are left out of a training run (too few to split).
VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY = env.int("VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY", default=3)
VITRINE_TRAINING_TIME_LIMIT_S = env.int("VITRINE_TRAINING_TIME_LIMIT_S", default=3 * 3600)
# A running training says it is alive this often; silent for VITRINE_TRAINING_STALE_AFTER_S, it is failed.
VITRINE_TRAINING_HEARTBEAT_S = env.int("VITRINE_TRAINING_HEARTBEAT_S", default=30)
VITRINE_TRAINING_STALE_AFTER_S = env.int("VITRINE_TRAINING_STALE_AFTER_S", default=600)
# Products per task of a bulk re-classification; the job's cursor moves on after each chunk.
VITRINE_BULK_CHUNK_SIZE = env.int("VITRINE_BULK_CHUNK_SIZE", default=64)
VITRINE_BULK_STALE_AFTER_S = env.int("VITRINE_BULK_STALE_AFTER_S", default=300)
# Webhooks: a delivery not answered 2xx is tried again this many seconds later, then 3x as long each time,
# until it has been tried VITRINE_WEBHOOK_MAX_ATTEMPTS times (10 s ... about 6 hours with the defaults).
VITRINE_WEBHOOK_RETRY_BASE_S = env.float("VITRINE_WEBHOOK_RETRY_BASE_S", default=10.0)
VITRINE_WEBHOOK_MAX_ATTEMPTS = env.int("VITRINE_WEBHOOK_MAX_ATTEMPTS", default=8)
# The drift monitor warns (dashboard banner, one log line) when a day's share of photos filed automatically is
# more than this many points below the model version's validation figure, on at least this many photos.
VITRINE_DRIFT_ALERT_POINTS = env.float("VITRINE_DRIFT_ALERT_POINTS", default=15.0)
VITRINE_DRIFT_MIN_PREDICTIONS = env.int("VITRINE_DRIFT_MIN_PREDICTIONS", default=30)

# Bulk import of products (CSV + ZIP of photos, admin "Import products"): limits checked before anything is
# stored, and rows per task of the import job (its cursor moves on after each row).
VITRINE_IMPORT_MAX_ROWS = env.int("VITRINE_IMPORT_MAX_ROWS", default=5000)
VITRINE_IMPORT_MAX_CSV_BYTES = env.int("VITRINE_IMPORT_MAX_CSV_BYTES", default=5 * 1024 * 1024)
# The proxy lets this much through on the import page only (docker/Caddyfile, VITRINE_PROXY_MAX_IMPORT_BODY).
VITRINE_IMPORT_MAX_ZIP_BYTES = env.int("VITRINE_IMPORT_MAX_ZIP_BYTES", default=200 * 1024 * 1024)
VITRINE_IMPORT_MAX_ZIP_ENTRIES = env.int("VITRINE_IMPORT_MAX_ZIP_ENTRIES", default=10_000)
VITRINE_IMPORT_CHUNK_SIZE = env.int("VITRINE_IMPORT_CHUNK_SIZE", default=50)
# An import whose cursor has not moved for this long gets its chunk sent again by the sweep.
VITRINE_IMPORT_STALE_AFTER_S = env.int("VITRINE_IMPORT_STALE_AFTER_S", default=300)

# Celery. Embedded default: a filesystem broker that needs no server; set CELERY_BROKER_URL for Redis.
# "localhost" only quiets kombu, which warns about a URL without a host; the folder is what matters.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")
CELERY_BROKER_FILESYSTEM_DIR = env.path("CELERY_BROKER_FILESYSTEM_DIR", default=VAR_DIR / "broker")
VITRINE_INFERENCE_QUEUE = env("VITRINE_INFERENCE_QUEUE", default="inference")
VITRINE_TRAINING_QUEUE = env("VITRINE_TRAINING_QUEUE", default="training")
# The catalog's background work: webhook deliveries and bulk imports (network and files, no model).
VITRINE_JOBS_QUEUE = env("VITRINE_JOBS_QUEUE", default="jobs")
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# The database holds every outcome; a result backend would only duplicate it.
CELERY_TASK_IGNORE_RESULT = True
# Nothing may land on a queue no worker listens to.
CELERY_TASK_DEFAULT_QUEUE = VITRINE_INFERENCE_QUEUE
CELERY_TASK_ROUTES = {
    "classifier.tasks.classify_products": {"queue": VITRINE_INFERENCE_QUEUE},
    "classifier.tasks.classify_products_chunk": {"queue": VITRINE_INFERENCE_QUEUE},
    "classifier.tasks.sweep_stuck_products": {"queue": VITRINE_INFERENCE_QUEUE},
    "classifier.tasks.train*": {"queue": VITRINE_TRAINING_QUEUE},
    "catalog.tasks.*": {"queue": VITRINE_JOBS_QUEUE},
    "classifier.tasks.record_drift_alerts": {"queue": VITRINE_JOBS_QUEUE},
}
# A message is acknowledged after its task ran, so a worker killed mid-task leaves it to be redelivered.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Enforced by prefork workers; the solo inference worker runs tasks inline where Celery cannot time them.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A save with the broker down gives up publishing within about a second; the sweep sends it later.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=1.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


def celery_broker_transport_options(*, broker_url: str, visibility_timeout_s: int) -> dict:
    if broker_url.startswith("filesystem:"):
        queue_dir = str(Path(CELERY_BROKER_FILESYSTEM_DIR) / "queue")
        # One folder is both outbox and inbox: the web process and the workers on this machine share it.
        return {
            "data_folder_in": queue_dir,
            "data_folder_out": queue_dir,
            "control_folder": str(Path(CELERY_BROKER_FILESYSTEM_DIR) / "control"),
            "polling_interval": 0.1,
        }
    return {
        # An unacknowledged message (its worker died) goes back to the queue this long after delivery.
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 5)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
        "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=3.0),
    }


# Longer than any task runs, or a running task would be delivered a second time.
CELERY_BROKER_TRANSPORT_OPTIONS = celery_broker_transport_options(
    broker_url=CELERY_BROKER_URL, visibility_timeout_s=env.int("CELERY_VISIBILITY_TIMEOUT", default=7200)
)
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule")
)

# The storefront's anonymous API pages, shared by every process that reads or writes the catalog (they
# invalidate one another through it: catalog.storefront_cache). Embedded default: files under var/, which the
# web process and the worker on this machine both see; production: Redis. 0 seconds turns the cache off.
VITRINE_API_CACHE_SECONDS = env.int("VITRINE_API_CACHE_SECONDS", default=60)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "storefront": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": env.path("VITRINE_API_CACHE_DIR", default=VAR_DIR / "cache" / "storefront"),
    },
}

REST_FRAMEWORK = {
    # A view that forgets to name its permissions is staff-only, never open to writes.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    # Token first: an anonymous write gets 401 with a WWW-Authenticate header, not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "catalog.api.pagination.CatalogPagination",
    "DEFAULT_THROTTLE_CLASSES": ["catalog.api.throttling.AnonymousClientThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env("VITRINE_API_ANON_RATE", default="120/min")},
    "DEFAULT_SCHEMA_CLASS": "catalog.api.schema.CatalogAutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "vitrine API",
    "DESCRIPTION": (
        "The shop catalog: published products and their categories for anyone; "
        "uploads, category corrections and classification details for callers with the model permission "
        "each operation names (token or session)."
    ),
    "VERSION": "1.0.0",
    # The schema describes the catalog API, not the endpoint that serves it.
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Our one PATCH takes a required field; a "Patched" copy would wrongly make it optional.
    "COMPONENT_SPLIT_PATCH": False,
    # Tags and operation ids from what follows /api/v1/: "products", "categories", "model-versions".
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Swagger UI's files come from the installed sidecar package: the docs page works without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# The storefront's origins, e.g. CORS_ALLOWED_ORIGINS=https://shop.example.com; none by default.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"

LOG_LINE_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATTERS = {
    "plain": {"format": LOG_LINE_FIELDS},
    # One JSON object per line, for log collectors: production's default.
    "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": LOG_LINE_FIELDS},
}


def logging_config(*, log_format: str) -> dict:
    if log_format not in LOG_FORMATTERS:
        raise ImproperlyConfigured(
            f"DJANGO_LOG_FORMAT must be one of {', '.join(LOG_FORMATTERS)}, not {log_format!r}"
        )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {log_format: LOG_FORMATTERS[log_format]},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    }


LOGGING = logging_config(log_format=env("DJANGO_LOG_FORMAT", default="plain"))
