"""Real pieces for pipeline tests: a tiny trained model, Celery worker subprocesses, the Redis queues."""

import base64
import contextlib
import hashlib
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import redis
from celery import Celery
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from PIL import Image, ImageDraw

from catalog.models import Product

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# Nothing listens on the discard port: the broker as seen from a web process during an outage.
UNREACHABLE_BROKER_URL = "redis://127.0.0.1:9/15"
APPLIED_LINE = "classification applied: product {product_id} "
READY_LINE = " ready."
# classifier.workers.inference says how many classify_products messages each batch it was handed holds.
RECEIVED_LINE = re.compile(r"classifying (\d+) message\(s\) in ")


def tiny_model_dir(*, base_dir: pathlib.Path) -> pathlib.Path:
    """A seed_dense model trained one epoch on 200 Fashion-MNIST images per split (seconds), once per run."""
    out_dir = base_dir / "tiny-model"
    if (out_dir / "metadata.json").is_file():
        return out_dir
    from classifier.ml.datasets import load_dataset
    from classifier.ml.train import train

    dataset = load_dataset("fashion-mnist", datasets_dir=settings.VITRINE_DATASETS_DIR).subset(per_split=200)
    return train(dataset=dataset, arch="seed_dense", epochs=1, out_dir=out_dir).artifact_dir


def photo_bytes(*, seed: int = 0) -> bytes:
    """A product-photo stand-in: a dark garment-like shape on a white background, PNG."""
    photo = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(photo)
    shade = 30 + 7 * (seed % 20)
    draw.rectangle((18, 10 + seed % 5, 46, 56), fill=(shade, shade, shade))
    draw.rectangle((8, 10, 56, 22), fill=(shade, shade, shade))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(
    condition: Callable[[], object], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> object:
    """Polls until condition() is truthy and returns it; fails the test with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def product_status(product_id: int) -> str:
    return Product.objects.values_list("status", flat=True).get(pk=product_id)


def product_saved_without_queueing(*, name: str, image_bytes: bytes, **fields: object) -> Product:
    """A committed product row with its photo stored, sent to no queue (as if the broker had been down)."""
    stored_name = default_storage.save(f"products/{name}.png", ContentFile(image_bytes))
    return Product.objects.create(
        name=name,
        slug=name,
        sku=name.upper(),
        price=Decimal("10.00"),
        image=stored_name,
        image_sha256=hashlib.sha256(image_bytes).hexdigest(),
        status=Product.Status.PENDING,
        status_changed_at=timezone.now(),
        **fields,
    )


class BrokerQueues:
    """The Redis database the tests' broker uses: queue lengths, and emptying the queues between tests."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def length(self, queue: str) -> int:
        return self.client.llen(queue)

    def held_product_ids(self) -> set[int]:
        """The products of the messages delivered and not acknowledged (a dead worker's, when none runs)."""
        held = set()
        for payload in self.client.hvals("unacked"):
            message, _exchange, _routing_key = json.loads(payload)
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            held.update(kwargs["product_ids"])
        return held

    def clear(self) -> None:
        # Messages only: the exchange bindings stay, since running producers remember they declared them.
        names = [
            settings.VITRINE_INFERENCE_QUEUE,
            settings.VITRINE_TRAINING_QUEUE,
            "unacked",
            "unacked_index",
        ]
        keys = [key for name in names for key in self.client.scan_iter(match=f"{name}*")]
        if keys:
            self.client.delete(*keys)


@contextlib.contextmanager
def broker_unreachable(app: Celery) -> Iterator[None]:
    """This process publishes to a broker address where nothing listens, as during an outage."""
    saved_url = app.conf.broker_write_url

    def forget_connections() -> None:
        # The app caches its connection and producer pools per broker address; drop them to switch.
        app._pool = None
        app.amqp._producer_pool = None

    # The write URL is what publishing uses (and, unlike broker_url, the environment does not override it).
    app.conf.broker_write_url = UNREACHABLE_BROKER_URL
    forget_connections()
    try:
        yield
    finally:
        app.conf.broker_write_url = saved_url
        forget_connections()


def database_url_of_tests() -> str:
    """DATABASE_URL of the test database pytest-django made, so a worker process sees the tests' rows."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    # A worker waiting on a row lock gives up after a second, which tests retries on a transient error.
    return (
        f"postgres://{db['USER']}{password}@{db['HOST']}{port}/{db['NAME']}?options=-c%20lock_timeout%3D1000"
    )


def worker_environment(*, database_url: str, media_dir: pathlib.Path) -> dict[str, str]:
    """The environment of a worker process that shares the tests' database, broker and MEDIA_ROOT."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_MEDIA_ROOT": str(media_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


class CeleryWorker:
    """`celery worker` in a subprocess: solo pool, inference and training queues, its log in a file."""

    def __init__(self, *, name: str, log_dir: pathlib.Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.env = env
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    def start(
        self,
        *,
        extra_env: dict[str, str] | None = None,
        ready_timeout_s: float = 90,
        app: str = "config.celery_app",
    ) -> "CeleryWorker":
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--pool",
            "solo",
            "--queues",
            f"{settings.VITRINE_INFERENCE_QUEUE},{settings.VITRINE_TRAINING_QUEUE},{settings.VITRINE_JOBS_QUEUE}",
            "--hostname",
            f"{self.name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout_s=ready_timeout_s, what=f"worker {self.name} to be ready")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return READY_LINE.encode() in log.read()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the worker dies at once, in the middle of whatever it does, acknowledging nothing."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.is_running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


class Workers:
    """The worker processes of a test session; counts what all of them did, from their logs."""

    def __init__(self, *, env: dict[str, str], log_dir: pathlib.Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[CeleryWorker] = []

    def start(
        self, *, extra_env: dict[str, str] | None = None, app: str = "config.celery_app"
    ) -> CeleryWorker:
        worker = CeleryWorker(name=f"worker{len(self.started) + 1}", log_dir=self.log_dir, env=self.env)
        self.started.append(worker)
        return worker.start(extra_env=extra_env, app=app)

    def running(self) -> CeleryWorker:
        """The running worker; a new one when a test stopped or killed the last."""
        alive = [worker for worker in self.started if worker.is_running()]
        return alive[0] if alive else self.start()

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(worker.log() for worker in self.started)

    def applied_count(self, product_id: int) -> int:
        return self.logs().count(APPLIED_LINE.format(product_id=product_id))

    def received_count(self) -> int:
        return sum(int(count) for count in RECEIVED_LINE.findall(self.logs()))
