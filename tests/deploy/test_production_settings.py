"""config.settings.production in a subprocess, with the environment a container gets."""

import json
import pathlib
import secrets
import subprocess
import sys

import pytest

from tests.deploy.support import REPO_ROOT, dockerfile_run_environment, manage, production_environment

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'ssl_redirect': s.SECURE_SSL_REDIRECT, "
    "'proxy_header': s.SECURE_PROXY_SSL_HEADER, 'session_secure': s.SESSION_COOKIE_SECURE, "
    "'csrf_secure': s.CSRF_COOKIE_SECURE, 'hsts': s.SECURE_HSTS_SECONDS, "
    "'csrf_origins': s.CSRF_TRUSTED_ORIGINS, "
    "'static': s.STORAGES['staticfiles']['BACKEND'], 'middleware': s.MIDDLEWARE, "
    "'max_upload': s.VITRINE_MAX_UPLOAD_BYTES, 'threshold': s.VITRINE_CONFIDENCE_THRESHOLD, "
    "'queues': [s.VITRINE_INFERENCE_QUEUE, s.VITRINE_TRAINING_QUEUE], 'broker': s.CELERY_BROKER_URL, "
    "'visibility': s.CELERY_BROKER_TRANSPORT_OPTIONS.get('visibility_timeout'), "
    "'hijack': s.CELERY_WORKER_HIJACK_ROOT_LOGGER, 'cache': s.CACHES['default'], "
    "'login_limit': s.AXES_FAILURE_LIMIT, 'login_cooloff_s': s.AXES_COOLOFF_TIME.total_seconds(), "
    "'login_handler': s.AXES_HANDLER, 'login_backends': s.AUTHENTICATION_BACKENDS, "
    "'login_address': s.AXES_CLIENT_IP_CALLABLE}))"
)


def python(code: str, *, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_passes_with_production_settings_and_a_real_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_when_an_operator_turns_https_off() -> None:
    environment = production_environment(DJANGO_SECURE_SSL_REDIRECT="False", DJANGO_SECURE_HSTS_SECONDS="0")

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=environment)

    assert result.returncode != 0
    assert "security.W008" in result.stderr
    assert "security.W004" in result.stderr


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("DJANGO_SECRET_KEY", "Set the DJANGO_SECRET_KEY environment variable"),
        ("DJANGO_ALLOWED_HOSTS", "Set the DJANGO_ALLOWED_HOSTS environment variable"),
        ("DATABASE_URL", "Set the DATABASE_URL environment variable"),
        ("CELERY_BROKER_URL", "Set the CELERY_BROKER_URL environment variable"),
    ],
)
def test_production_refuses_to_start_without_a_required_setting(missing: str, message: str) -> None:
    environment = production_environment()
    del environment[missing]

    result = manage("check", env=environment)

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


@pytest.mark.parametrize("threshold", ["0", "1.5", "-1", "high", "nan"])
def test_a_confidence_threshold_outside_0_to_1_stops_the_start(threshold: str) -> None:
    result = manage("check", env=production_environment(VITRINE_CONFIDENCE_THRESHOLD=threshold))

    assert result.returncode != 0
    assert (
        "ImproperlyConfigured: VITRINE_CONFIDENCE_THRESHOLD must be a number above 0 and at most 1, "
        f"not {threshold!r}"
    ) in result.stderr


def test_production_refuses_a_blank_secret_key() -> None:
    result = manage("check", env=production_environment(DJANGO_SECRET_KEY="   "))

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is empty" in result.stderr


def test_production_settings_come_from_the_environment() -> None:
    environment = production_environment(
        DJANGO_DEBUG="True",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://admin.example.com",
        VITRINE_MAX_UPLOAD_BYTES="2000000",
        VITRINE_CONFIDENCE_THRESHOLD="0.9",
        VITRINE_INFERENCE_QUEUE="shop-inference",
        VITRINE_TRAINING_QUEUE="shop-training",
        AXES_FAILURE_LIMIT="8",
        AXES_COOLOFF_MINUTES="30",
    )

    result = python(PRINT_SETTINGS, env=environment)

    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["debug"] is False
    assert settings["hosts"] == ["shop.example.com", ".example.org"]
    assert settings["csrf_origins"] == ["https://admin.example.com"]
    assert settings["ssl_redirect"] and settings["session_secure"] and settings["csrf_secure"]
    assert settings["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert settings["hsts"] > 0
    assert settings["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    middleware = settings["middleware"]
    assert middleware.index("whitenoise.middleware.WhiteNoiseMiddleware") == (
        middleware.index("django.middleware.security.SecurityMiddleware") + 1
    )
    assert settings["max_upload"] == 2_000_000
    assert settings["threshold"] == 0.9
    assert settings["queues"] == ["shop-inference", "shop-training"]
    assert settings["broker"] == environment["CELERY_BROKER_URL"]
    assert settings["visibility"] == 7200
    assert settings["hijack"] is False
    assert settings["login_limit"] == 8
    assert settings["login_cooloff_s"] == 30 * 60
    assert settings["login_handler"] == "axes.handlers.database.AxesDatabaseHandler"
    assert settings["login_backends"][0] == "axes.backends.AxesStandaloneBackend"
    assert "axes.middleware.AxesMiddleware" in middleware
    assert settings["login_address"] == "config.proxy.client_ip_address"


@pytest.mark.parametrize(
    ("overrides", "cache_url"),
    [
        ({"CELERY_BROKER_URL": "redis://redis:6379/0"}, "redis://redis:6379/1"),
        (
            {"CELERY_BROKER_URL": "rediss://:pw@cache.example.com:6380/3"},
            "rediss://:pw@cache.example.com:6380/4",
        ),
        ({"CELERY_BROKER_URL": "redis://redis:6379"}, "redis://redis:6379/1"),
        (
            {
                "CELERY_BROKER_URL": "redis://redis:6379/0",
                "REDIS_CACHE_URL": "redis://cache.example.com:6379/2",
            },
            "redis://cache.example.com:6379/2",
        ),
        (
            {
                "CELERY_BROKER_URL": "amqp://mq.example.com//",
                "REDIS_CACHE_URL": "redis://cache.example.com/0",
            },
            "redis://cache.example.com/0",
        ),
    ],
)
def test_production_shares_one_redis_cache_beside_the_broker_unless_told_another(
    overrides: dict[str, str], cache_url: str
) -> None:
    result = python(PRINT_SETTINGS, env=production_environment(**overrides))

    assert result.returncode == 0, result.stderr
    cache = json.loads(result.stdout)["cache"]
    assert cache["BACKEND"] == "config.redis_cache.PooledRedisCache"
    assert cache["LOCATION"] == cache_url


def test_production_refuses_a_broker_that_is_not_redis_without_a_cache_url() -> None:
    result = manage("check", env=production_environment(CELERY_BROKER_URL="amqp://mq.example.com//"))

    assert result.returncode != 0
    assert "REDIS_CACHE_URL is empty and CELERY_BROKER_URL is not Redis; set it" in result.stderr


def test_anonymous_api_throttle_counts_are_shared_by_every_production_process() -> None:
    """Three processes, as three gunicorn workers would be, allow 2 requests a minute between them."""
    visitor = f"198.51.100.{secrets.randbelow(250) + 1}"
    ask = (
        "import django; django.setup(); from django.test import RequestFactory; "
        "from django.contrib.auth.models import AnonymousUser; "
        "from catalog.api.throttling import AnonymousClientThrottle; "
        f"request = RequestFactory().get('/api/v1/products/', REMOTE_ADDR='{visitor}'); "
        "request.user = AnonymousUser(); "
        "print(AnonymousClientThrottle().allow_request(request, None))"
    )
    environment = production_environment(
        VITRINE_API_ANON_RATE="2/min",
        # The tests' Redis database; a random visitor address keeps runs apart.
        REDIS_CACHE_URL=production_environment()["CELERY_BROKER_URL"],
    )

    answers = []
    for _ in range(3):
        result = python(ask, env=environment)
        assert result.returncode == 0, result.stderr
        answers.append(result.stdout.strip())

    assert answers == ["True", "True", "False"]


def test_production_logs_one_json_object_per_line_and_plain_on_request() -> None:
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('vitrine.test').warning('hello %s', 'shop')"
    )

    as_json = python(code, env=production_environment())
    as_plain = python(code, env=production_environment(DJANGO_LOG_FORMAT="plain"))
    unknown = python(code, env=production_environment(DJANGO_LOG_FORMAT="xml"))

    line = json.loads(as_json.stderr.strip().splitlines()[-1])
    assert (line["levelname"], line["name"], line["message"]) == ("WARNING", "vitrine.test", "hello shop")
    assert "asctime" in line
    assert as_plain.stderr.strip().endswith("WARNING vitrine.test hello shop")
    assert "DJANGO_LOG_FORMAT must be one of plain, json, not 'xml'" in unknown.stderr


def test_the_image_collects_static_files_that_whitenoise_serves(tmp_path: pathlib.Path) -> None:
    # The Dockerfile's own build-time environment, with the output redirected here.
    environment = {
        **production_environment(),
        **dockerfile_run_environment("collectstatic"),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }
    collected = manage("collectstatic", "--noinput", "--verbosity", "0", env=environment)
    assert collected.returncode == 0, collected.stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())
    hashed_css = manifest["paths"]["admin/css/base.css"]
    serve = (
        "import django; django.setup(); from django.test import Client; "
        f"r = Client().get('/static/{hashed_css}', secure=True, HTTP_HOST='shop.example.com'); "
        "print(r.status_code, r.headers.get('Cache-Control'), r.headers.get('Content-Type'), sep='|')"
    )

    served = python(serve, env={**production_environment(), "DJANGO_STATIC_ROOT": str(tmp_path / "static")})

    assert served.returncode == 0, served.stderr
    status, cache_control, content_type = served.stdout.strip().split("|")
    assert status == "200"
    assert "immutable" in cache_control
    assert content_type.startswith("text/css")
    assert (tmp_path / "static" / f"{hashed_css}.gz").is_file()


@pytest.mark.django_db
def test_the_suite_itself_runs_on_postgresql_and_redis(settings) -> None:
    from django.db import connection

    assert connection.vendor == "postgresql"
    assert settings.CELERY_BROKER_URL.startswith("redis://")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"VITRINE_STORAGE": "nfs"}, "VITRINE_STORAGE must be one of filesystem, s3, not 'nfs'"),
        ({"VITRINE_STORAGE": "s3"}, "VITRINE_STORAGE is s3 but AWS_STORAGE_BUCKET_NAME is empty"),
        (
            {"VITRINE_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "shop", "VITRINE_MEDIA_URLS": "open"},
            "VITRINE_MEDIA_URLS must be one of signed, public, not 'open'",
        ),
    ],
)
def test_a_storage_setting_that_cannot_work_stops_the_start_saying_which(
    overrides: dict, message: str
) -> None:
    result = manage("check", env=production_environment(**overrides))

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_public_media_urls_come_from_the_custom_domain_unsigned_and_models_stay_private() -> None:
    environment = production_environment(
        VITRINE_STORAGE="s3",
        AWS_STORAGE_BUCKET_NAME="shop",
        AWS_S3_ENDPOINT_URL="http://minio:9000",
        VITRINE_MEDIA_URLS="public",
        AWS_S3_CUSTOM_DOMAIN="shop.example.com/bucket",
        AWS_ACCESS_KEY_ID="vitrine",
        AWS_SECRET_ACCESS_KEY="not-a-real-secret",
    )
    result = manage(
        "shell",
        "-c",
        "from django.core.files.storage import storages; "
        "print(storages['default'].url('products/ab/x.jpg')); "
        "print(storages['artifacts'].url('abc/model.keras'))",
        env=environment,
    )

    assert result.returncode == 0, result.stderr
    media_url, model_url = result.stdout.split()[-2:]
    assert media_url == "https://shop.example.com/bucket/media/products/ab/x.jpg"
    assert (
        model_url.startswith("http://minio:9000/shop/models/abc/model.keras?") and "Signature=" in model_url
    )
