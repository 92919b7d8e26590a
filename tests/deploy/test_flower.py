"""The flower service's own command (docker-compose.yml) refuses to start without FLOWER_BASIC_AUTH."""

import os
import subprocess
import sys

import pytest

from tests.deploy.support import REPO_ROOT, service_command

FLOWER = ["celery", "-A", "config.celery_app", "flower", "--port=5555"]


def run_guarded(command: list[str], **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    return subprocess.run(
        command, cwd=REPO_ROOT, env={**env, **environment}, capture_output=True, text=True, timeout=30
    )


def guard_starting(program: list[str]) -> list[str]:
    """The compose command's guard as written, handing over to `program` instead of Flower itself (the
    flower image has it, this virtual environment does not)."""
    command = service_command("flower")
    assert command[-len(FLOWER) :] == FLOWER
    return command[: -len(FLOWER)] + program


@pytest.mark.parametrize("environment", [{}, {"FLOWER_BASIC_AUTH": ""}], ids=["unset", "empty"])
def test_flower_refuses_to_start_without_basic_auth(environment: dict[str, str]) -> None:
    result = run_guarded(service_command("flower"), **environment)

    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "flower: FLOWER_BASIC_AUTH is empty; set user:password in .env (see .env.example)"
    ]


def test_flower_starts_with_basic_auth_and_reads_it_from_the_environment() -> None:
    show = [sys.executable, "-c", "import os, sys; print(sys.argv[1:], os.environ['FLOWER_BASIC_AUTH'])"]

    result = run_guarded(guard_starting([*show, *FLOWER[1:]]), FLOWER_BASIC_AUTH="ops:s3cret")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{FLOWER[1:]} ops:s3cret"
