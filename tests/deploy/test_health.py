"""/healthz: 200 with JSON when the database, the broker and the active model file are fine, 503 naming
what is not; and the web container's own command (gunicorn) and probe (docker/healthcheck.py), run here."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from django.urls import reverse

from classifier.models import ModelVersion
from config.celery_app import app as celery_app
from tests.deploy.support import (
    REPO_ROOT,
    ModelCopy,
    damage,
    free_port,
    healthcheck_command,
    on_this_machine,
    production_environment,
    service_command,
)
from tests.e2e.support import broker_unreachable, database_url_of_tests, wait_for


def healthz(client) -> tuple[int, dict]:
    response = client.get(reverse("healthz"))
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


@pytest.mark.django_db
def test_healthz_is_200_when_database_broker_and_model_are_fine(client, registered_copy: ModelCopy) -> None:
    registered_copy("shop-v1", activate=True)

    status, body = healthz(client)

    assert status == 200
    assert body == {
        "status": "ok",
        "checks": {
            "database": {"ok": True},
            "broker": {"ok": True},
            "model": {"ok": True, "version": "shop-v1"},
        },
    }


@pytest.mark.django_db
def test_healthz_names_the_broker_when_it_is_unreachable(client, registered_copy: ModelCopy) -> None:
    registered_copy("shop-v1", activate=True)

    with broker_unreachable(celery_app):
        status, body = healthz(client)

    assert status == 503
    assert body["status"] == "failing"
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["error"].startswith("broker unreachable: ")
    assert body["checks"]["database"] == {"ok": True}


@pytest.mark.django_db
def test_healthz_names_a_corrupt_model_file(client, registered_copy: ModelCopy) -> None:
    model_version = registered_copy("shop-v1", activate=True)
    assert healthz(client)[0] == 200
    model_path = damage(model_version)

    status, body = healthz(client)

    assert status == 503
    assert body["failing"] == ["model"]
    assert body["checks"]["model"]["version"] == "shop-v1"
    assert f"{model_path} is corrupt or was replaced" in body["checks"]["model"]["error"]


@pytest.mark.django_db
def test_healthz_says_when_no_model_version_is_active(client, registered_copy: ModelCopy) -> None:
    registered_copy("shop-v1", activate=False)

    status, body = healthz(client)

    assert status == 503
    assert body["failing"] == ["model"]
    assert body["checks"]["model"]["error"] == "no model version is active"


def test_healthz_names_the_database_when_it_is_unreachable() -> None:
    # A closed port: a process whose database is down, in a fresh interpreter.
    code = (
        "import django; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz', HTTP_HOST='shop.example.com'); print(r.status_code, r.content.decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=production_environment(DATABASE_URL="postgres://postgres@127.0.0.1:9/vitrine"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    status, body = result.stdout.split(" ", 1)
    checks = json.loads(body)["checks"]
    assert status == "503"
    assert json.loads(body)["failing"] == ["database", "model"]
    assert checks["database"]["error"].startswith("database unreachable: ")
    assert checks["model"]["error"] == "unknown: the database is unreachable"
    assert checks["broker"] == {"ok": True}


@pytest.fixture
def gunicorn(transactional_db: None, tiny_model) -> Iterator[tuple[str, dict[str, str]]]:
    """The web service's command from docker-compose.yml, on a free port, against the tests' database."""
    port = free_port()
    environment = production_environment(
        DATABASE_URL=database_url_of_tests(), WEB_PORT=str(port), WEB_CONCURRENCY="1"
    )
    process = subprocess.Popen(
        on_this_machine(service_command("web")),
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {process.stdout.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    try:
        wait_for(answers, timeout_s=60, what="gunicorn to answer", interval_s=0.3)
        yield f"http://127.0.0.1:{port}", environment
    finally:
        process.terminate()
        process.wait(timeout=30)


def web_probe(base_url: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """The web service's healthcheck from docker-compose.yml, aimed at this gunicorn's port."""
    command = healthcheck_command("web")
    command = [part.replace("http://127.0.0.1:8000", base_url) for part in command]
    return subprocess.run(
        on_this_machine(command), cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=30
    )


def test_the_web_container_command_serves_healthz_to_its_probe(
    gunicorn: tuple[str, dict[str, str]], registered_copy: ModelCopy
) -> None:
    base_url, environment = gunicorn
    model_version = registered_copy("shop-v1", activate=True)

    healthy = web_probe(base_url, environment)
    ModelVersion.objects.filter(pk=model_version.pk).update(is_active=False)
    unhealthy = web_probe(base_url, environment)
    # Everything but the probe's path is sent to HTTPS, since the proxy terminates TLS.
    request = urllib.request.Request(f"{base_url}/api/v1/products/", headers={"Host": "shop.example.com"})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirects).open(request, timeout=10)

    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode == 1
    assert "HTTP 503" in unhealthy.stderr
    assert "no model version is active" in unhealthy.stderr
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"] == "https://shop.example.com/api/v1/products/"


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
