"""docker-compose.worker.yml (an inference worker on a host of its own) and the inference workers' preStop
(docker/kubernetes/): the worker's command started here with only what the worker host's .env gives it,
PostgreSQL and Redis real."""

import json
import os
import pathlib
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml
from django.conf import settings

from config.celery_app import app as celery_app
from tests.deploy.support import (
    KUBERNETES_DIR,
    REPO_ROOT,
    WORKER_COMPOSE_FILE,
    MissingVariable,
    compose,
    healthcheck_command,
    interpolate,
    on_this_machine,
    service_command,
)
from tests.e2e.support import BrokerQueues, database_url_of_tests, wait_for

# What the worker host's .env holds (docker-compose.worker.yml's header), besides DJANGO_SECRET_KEY.
WORKER_HOST_SETTINGS = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "AWS_S3_ENDPOINT_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
SWEEP = "classifier.tasks.sweep_stuck_products"


def worker_file() -> dict:
    return compose(WORKER_COMPOSE_FILE)


def test_the_worker_host_runs_one_inference_worker_gpu_or_cpu_and_nothing_else() -> None:
    services = worker_file()["services"]
    stack_gpu_worker = compose()["services"]["worker-gpu"]

    assert set(services) == {"worker-gpu", "worker-cpu"}
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert services["worker-gpu"]["deploy"] == stack_gpu_worker["deploy"]
    assert "deploy" not in services["worker-cpu"]
    # The stack's GPU worker, to the letter; the CPU one differs only in its name.
    gpu = service_command("worker-gpu", path=WORKER_COMPOSE_FILE)
    assert gpu == service_command("worker-gpu")
    assert service_command("worker-cpu", path=WORKER_COMPOSE_FILE) == [
        part.replace("inference-gpu@", "inference-cpu@") for part in gpu
    ]
    for name, service in services.items():
        assert not {"volumes", "ports", "depends_on"} & set(service), name
        assert service["environment"]["VITRINE_STORAGE"] == "s3", name
        assert service["image"] == f"vitrine:{service['build']['target']}", name


def test_the_worker_host_names_each_missing_setting() -> None:
    environment = worker_file()["x-worker-environment"]

    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "AWS_S3_ENDPOINT_URL", "AWS_STORAGE_BUCKET_NAME"):
        with pytest.raises(MissingVariable, match=f"^{name}: the stack's "):
            interpolate(environment[name], {})
    # The credentials come from the host's .env, never from the file.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DJANGO_SECRET_KEY"} & set(environment)


def worker_host_environment(models_dir: pathlib.Path) -> dict[str, str]:
    """The container's environment: the worker host's .env, then the file's environment: block on top."""
    dotenv = {
        "DATABASE_URL": database_url_of_tests(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        # Nothing listens there: starting and sweeping never touch the bucket.
        "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_STORAGE_BUCKET_NAME": "vitrine",
        "AWS_ACCESS_KEY_ID": "vitrine-app",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    assert set(dotenv) == {*WORKER_HOST_SETTINGS, "DJANGO_SECRET_KEY"}
    block = worker_file()["services"]["worker-cpu"]["environment"]
    environment = {key: interpolate(str(value), dotenv) for key, value in block.items()}
    environment["VITRINE_MODELS_DIR"] = str(models_dir)
    # The image's PATH and HOSTNAME; `celery` in a probe's shell line is this virtual environment's.
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**dotenv, **environment, "PATH": path, "HOSTNAME": socket.gethostname(), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def cpu_worker(transactional_db: None, tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen, dict]]:
    """docker-compose.worker.yml's worker-cpu, started with the worker host's environment only."""
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    environment = worker_host_environment(tmp_path / "models")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            on_this_machine(service_command("worker-cpu", path=WORKER_COMPOSE_FILE)),
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
        return any(json.loads(line)["message"].endswith(" ready.") for line in lines)

    try:
        wait_for(ready, timeout_s=120, what="the worker to be ready", interval_s=0.3)
        yield process, environment
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        queues.clear()


def run(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        on_this_machine(command),
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=150,
    )


def inference_cpu_pre_stop() -> list[str]:
    deployment = yaml.safe_load((KUBERNETES_DIR / "inference-cpu.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["lifecycle"]["preStop"]["exec"]["command"]


@pytest.mark.worker
def test_the_worker_host_settings_are_enough_for_a_worker_that_takes_the_inference_queue(cpu_worker) -> None:
    process, environment = cpu_worker
    queues = BrokerQueues(settings.CELERY_BROKER_URL)

    celery_app.send_task(SWEEP)
    wait_for(
        lambda: queues.length(settings.VITRINE_INFERENCE_QUEUE) == 0, timeout_s=30, what="the sweep taken"
    )
    probe = run(healthcheck_command("worker-cpu", path=WORKER_COMPOSE_FILE), environment)

    assert probe.returncode == 0, probe.stderr
    assert process.poll() is None


@pytest.mark.worker
def test_after_its_pre_stop_a_worker_takes_no_message_and_sigterm_leaves_the_queue_as_it_was(
    cpu_worker,
) -> None:
    process, environment = cpu_worker
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queue = settings.VITRINE_INFERENCE_QUEUE

    pre_stop = run(inference_cpu_pre_stop(), environment)
    celery_app.send_task(SWEEP)
    time.sleep(5)
    waiting_while_alive = queues.length(queue)
    alive = run(healthcheck_command("worker-cpu", path=WORKER_COMPOSE_FILE), environment)
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(timeout=60)

    assert pre_stop.returncode == 0, pre_stop.stderr
    assert f"no longer consuming from {queue}" in pre_stop.stdout
    assert shlex.split(inference_cpu_pre_stop()[2])[5] == queue
    assert waiting_while_alive == 1
    assert alive.returncode == 0, alive.stderr
    # Warm shutdown: exit 0, the message still waiting for the next worker.
    assert exit_code == 0
    assert queues.length(queue) == 1
