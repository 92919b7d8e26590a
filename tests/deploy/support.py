"""What the deployment files say, read by the tests: the compose file, the Dockerfile, the production
environment a process needs, and starting a compose service's command here without Docker."""

import ast
import os
import pathlib
import re
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from classifier.models import ModelVersion

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# A worker-only host joining the stack (README "Running on several machines").
WORKER_COMPOSE_FILE = REPO_ROOT / "docker-compose.worker.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
KUBERNETES_DIR = REPO_ROOT / "docker" / "kubernetes"
# registered_copy("v2", activate=True) -> ModelVersion (tests/deploy/conftest.py).
ModelCopy = Callable[..., "ModelVersion"]


def compose(path: pathlib.Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


class MissingVariable(ValueError):
    """A ${NAME:?message} whose NAME is empty: compose refuses to start, printing the message."""


def kubernetes_resources() -> list[str]:
    """The manifests docker/kubernetes/kustomization.yaml applies, in its order."""
    return yaml.safe_load((KUBERNETES_DIR / "kustomization.yaml").read_text())["resources"]


def kubernetes_manifests() -> list[dict]:
    """Every object those manifests define (a file may hold several, separated by ---)."""
    return [
        document
        for name in kubernetes_resources()
        for document in yaml.safe_load_all((KUBERNETES_DIR / name).read_text())
        if document
    ]


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${NAME:-default} (innermost first, so defaults may nest), ${NAME:?message} and $$."""
    variable = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::([-?])([^{}]*))?\}")

    def value(match: re.Match) -> str:
        name, kind, fallback = match.groups()
        if values.get(name):
            return values[name]
        if kind == "?":
            raise MissingVariable(f"{name}: {fallback}")
        return fallback or ""

    while (replaced := variable.sub(value, text)) != text:
        text = replaced
    return text.replace("$$", "$")


def service_command(
    name: str, values: dict[str, str] | None = None, *, path: pathlib.Path = COMPOSE_FILE
) -> list[str]:
    return [interpolate(part, values or {}) for part in compose(path)["services"][name]["command"]]


def healthcheck_command(
    name: str, values: dict[str, str] | None = None, *, path: pathlib.Path = COMPOSE_FILE
) -> list[str]:
    """The service's healthcheck as a command line for this machine (CMD-SHELL runs through sh)."""
    test = [
        interpolate(part, values or {}) for part in compose(path)["services"][name]["healthcheck"]["test"]
    ]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return test[1:]


def on_this_machine(command: list[str]) -> list[str]:
    """The image's `celery`, `gunicorn` and `python` are the ones of this virtual environment."""
    program = {"python": [sys.executable], "celery": [sys.executable, "-m", "celery"]}
    program["gunicorn"] = [sys.executable, "-m", "gunicorn"]
    return [*program.get(command[0], [command[0]]), *command[1:]]


def settings_read_by_the_code() -> set[str]:
    """Every environment variable the settings read (env("X"), env.int("X")...) or the code reads by name."""
    names: set[str] = set()
    for path in (REPO_ROOT / "config" / "settings").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            function = node.func
            is_env = (isinstance(function, ast.Name) and function.id == "env") or (
                isinstance(function, ast.Attribute)
                and isinstance(function.value, ast.Name)
                and function.value.id == "env"
            )
            if is_env and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    reads = re.compile(r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
    constants = re.compile(r"""^([A-Z_]+_ENV)\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE)
    for folder in ("config", "catalog", "classifier"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text()
            names.update(reads.findall(text))
            names.update(value for _, value in constants.findall(text))
    return names


def production_environment(**overrides: str) -> dict[str, str]:
    """What a production process gets from .env and the compose file, pointed at the tests' services."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "VITRINE_", "CELERY_")) and key != "DATABASE_URL"
    }
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "shop.example.com,.example.org",
            "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vitrine"),
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    environment.update(overrides)
    return environment


def manage(*args: str, env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def dockerfile_run_environment(marker: str) -> dict[str, str]:
    """NAME=value pairs of the Dockerfile RUN instruction containing `marker` (joined across backslashes)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("RUN ") and marker in line)
    return dict(word.split("=", 1) for word in shlex.split(line[4:]) if re.match(r"^[A-Z_]+=", word))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def damage(model_version: "ModelVersion") -> pathlib.Path:
    """Overwrites bytes in the middle of the version's model.keras, as a bad disk or a broken copy would."""
    from classifier.selectors import model_version_artifact_dir

    model_path = model_version_artifact_dir(model_version=model_version) / "model.keras"
    data = bytearray(model_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    model_path.write_bytes(bytes(data))
    return model_path
