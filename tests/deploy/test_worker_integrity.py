"""A corrupt model file at serving time, on a real worker: the GPU worker's command from docker-compose.yml,
with production settings (JSON logs), PostgreSQL and Redis. Without a GPU it runs the same code on the CPU."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from catalog.models import Product
from catalog.services.products import product_create
from classifier.services.model_versions import model_version_activate
from tests.deploy.support import (
    REPO_ROOT,
    ModelCopy,
    damage,
    healthcheck_command,
    on_this_machine,
    production_environment,
    service_command,
)
from tests.e2e.support import BrokerQueues, database_url_of_tests, photo_bytes, product_status, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DONE = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


class ComposeWorker:
    """The worker-gpu service's command in a subprocess, its log in a file."""

    def __init__(self, *, environment: dict[str, str], log_path: pathlib.Path) -> None:
        self.environment = environment
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "ComposeWorker":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                on_this_machine(service_command("worker-gpu")),
                cwd=REPO_ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout_s=120, what="the worker to be ready", interval_s=0.2)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{self.log()[-3000:]}")
        return any(record.get("message", "").endswith(" ready.") for record in self.records())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        """The log's JSON lines (Celery's start banner, printed before logging is set up, is not one)."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def messages(self, logger: str) -> list[str]:
        return [record["message"] for record in self.records() if record["name"] == logger]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def start_worker(media_root: pathlib.Path, tmp_path: pathlib.Path):
    BrokerQueues(settings.CELERY_BROKER_URL).clear()
    environment = production_environment(
        DATABASE_URL=database_url_of_tests(), DJANGO_MEDIA_ROOT=str(media_root), HOSTNAME=socket.gethostname()
    )
    started: list[ComposeWorker] = []

    def start() -> ComposeWorker:
        worker = ComposeWorker(environment=environment, log_path=tmp_path / f"worker{len(started) + 1}.log")
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
    BrokerQueues(settings.CELERY_BROKER_URL).clear()


def save_product(sku: str, *, seed: int) -> Product:
    photo = SimpleUploadedFile(f"{sku}.png", photo_bytes(seed=seed), content_type="image/png")
    return product_create(name=f"Shirt {sku}", sku=sku, price=Decimal("19.00"), image=photo)


def classified(product: Product) -> Product:
    wait_for(
        lambda: product_status(product.pk) in DONE, timeout_s=60, what=f"product {product.pk} classified"
    )
    product.refresh_from_db()
    return product


def probe(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """The worker-gpu service's healthcheck: celery inspect ping to this worker."""
    # A shell line: its `celery` comes from PATH, as in the image; here the virtual environment's.
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(
        on_this_machine(healthcheck_command("worker-gpu")),
        cwd=REPO_ROOT,
        env={**environment, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_corrupt_active_model_is_refused_and_the_previous_version_keeps_classifying(
    start_worker, registered_copy: ModelCopy, tiny_model: pathlib.Path
) -> None:
    first = registered_copy("shop-v1", activate=True)
    worker = start_worker()
    before = classified(save_product("BEFORE", seed=1))
    second = registered_copy("shop-v2")
    model_version_activate(model_version=second)
    model_path = damage(second)

    after = classified(save_product("AFTER", seed=2))

    start_lines = worker.messages("classifier.workers.runtime")
    assert start_lines[0].startswith(
        f"serving model version shop-v1 (id {first.pk}, seed_dense, 10 categories"
    )
    assert " on CPU (" in start_lines[0] and "no GPU found" in start_lines[0]
    assert before.model_version == first
    assert after.model_version == first
    refusals = [
        record
        for record in worker.records()
        if record["message"].startswith("refusing model version shop-v2")
    ]
    assert len(refusals) == 1
    assert refusals[0]["levelname"] == "ERROR"
    assert f"{model_path} is corrupt or was replaced" in refusals[0]["message"]
    assert refusals[0]["message"].endswith(f"still serving model version shop-v1 (id {first.pk})")
    assert probe(worker.environment).returncode == 0


def test_a_worker_that_never_had_a_good_model_leaves_products_queued_until_the_file_is_repaired(
    start_worker, registered_copy: ModelCopy, tiny_model: pathlib.Path
) -> None:
    version = registered_copy("shop-v1", activate=True)
    model_path = damage(version)
    worker = start_worker()

    waiting = save_product("WAITING", seed=3)
    wait_for(
        lambda: any(
            f"products [{waiting.pk}] wait" in line
            for line in worker.messages("classifier.workers.inference")
        ),
        timeout_s=30,
        what="the worker to take the product",
    )
    still_queued = product_status(waiting.pk)
    shutil.copyfile(tiny_model / "model.keras", model_path)
    call_command("sweep_stuck", "--older-than", "0")
    repaired = classified(waiting)

    runtime_lines = worker.messages("classifier.workers.runtime")
    assert runtime_lines[0].startswith("refusing model version shop-v1: ")
    assert runtime_lines[0].endswith("no model version is served: products stay queued for the sweep")
    assert "serving no model version on CPU" in runtime_lines[1]
    assert still_queued == Product.Status.QUEUED
    assert repaired.model_version == version
    assert runtime_lines[2].startswith(f"serving model version shop-v1 (id {version.pk}")
    worker.stop()
    assert probe(worker.environment).returncode != 0
