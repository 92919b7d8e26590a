"""Save-to-category latency and throughput of the whole pipeline, against a warm worker.

    python bench/pipeline_latency.py [--products 50] [--burst 500] [--artifact DIR] [--no-worker]

Uses PostgreSQL and Redis when reachable (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/
vitrine_bench, recreated and dropped; BENCH_BROKER_URL, default redis://127.0.0.1:6379/13); otherwise the
embedded setup (SQLite + filesystem broker in a temporary folder), and says so. Starts its own
`celery worker --pool solo` (unless --no-worker: then a worker must serve the same database and broker),
registers the model (--artifact; default the newest in VITRINE_MODELS_DIR, else bootstrap_model trains one),
then:
  1. saves --products products one after another through product_create (catalog.services.products) and
     prints p50 / p95
     of the time from the save call to the prediction being visible in the database (goal p50 <= 250 ms,
     p95 <= 1 s on 2 cores);
  2. saves --burst products as fast as it can and prints how many images per second the worker classified.
"""

import argparse
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from decimal import Decimal

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/vitrine_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"
DONE = ("classified", "needs_review", "failed")
POLL_S = 0.002


def reachable(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


def recreate_postgres_database(url: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_postgres_database(url: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=50, help="products saved one at a time (latency)")
    parser.add_argument("--burst", type=int, default=500, help="products saved at once (throughput)")
    parser.add_argument(
        "--artifact", type=pathlib.Path, help="model directory; default: newest in VITRINE_MODELS_DIR"
    )
    parser.add_argument("--no-worker", action="store_true", help="use a worker that is already running")
    args = parser.parse_args()

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL)
    on_servers = reachable(database_url) and reachable(broker_url)
    if on_servers:
        recreate_postgres_database(database_url)
        setup = f"PostgreSQL ({database_url}) + Redis ({broker_url})"
    else:
        # Writers wait for the lock instead of failing at once; WAL lets the worker read while the web writes.
        database_url = (
            f"sqlite:///{scratch / 'bench.sqlite3'}"
            "?timeout=20&transaction_mode=IMMEDIATE&init_command=PRAGMA%20journal_mode%3DWAL"
        )
        broker_url = "filesystem://localhost//"
        setup = (
            "embedded SQLite + filesystem broker: PostgreSQL or Redis is not reachable (set "
            "BENCH_DATABASE_URL / BENCH_BROKER_URL); the broker is polled every 0.1 s, so expect about "
            "50 ms more per product"
        )
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_BROKER_FILESYSTEM_DIR": str(scratch / "broker"),
            "DJANGO_MEDIA_ROOT": str(scratch / "media"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "DJANGO_LOG_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from catalog.models import Product
    from catalog.services.products import product_create
    from classifier.services.model_versions import model_version_register

    worker = None
    try:
        call_command("migrate", verbosity=0)
        artifact = args.artifact or newest_artifact(pathlib.Path(settings.VITRINE_MODELS_DIR))
        if artifact is None:
            call_command("bootstrap_model")
        else:
            model_version_register(artifact_dir=artifact, name=f"bench-{uuid.uuid4().hex[:8]}", activate=True)
        print(f"setup: {setup}")
        print(f"model: {artifact or 'trained by bootstrap_model'}")
        if not args.no_worker:
            worker = start_worker(log_path=scratch / "worker.log")
        photos = sample_photos(pathlib.Path(settings.VITRINE_DATASETS_DIR))

        def save(number: int) -> Product:
            name, content = photos[number % len(photos)]
            upload = SimpleUploadedFile(name, content, content_type="image/jpeg")
            return product_create(
                name=f"Bench {number}",
                sku=f"BENCH-{uuid.uuid4().hex[:12]}",
                price=Decimal("10"),
                image=upload,
            )

        def wait_done(product_ids: list[int], *, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while Product.objects.filter(pk__in=product_ids, status__in=DONE).count() < len(product_ids):
                if time.monotonic() > deadline:
                    raise SystemExit(f"products not classified within {timeout_s} s (worker log: {scratch})")
                time.sleep(POLL_S if len(product_ids) == 1 else 0.05)

        for number in range(5):
            wait_done([save(number).pk], timeout_s=120)

        latencies = []
        for number in range(args.products):
            started = time.perf_counter()
            product = save(1000 + number)
            wait_done([product.pk], timeout_s=30)
            latencies.append(time.perf_counter() - started)
        print(
            f"save -> category visible, {args.products} products one at a time: "
            f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms"
        )

        started = time.perf_counter()
        burst_ids = [save(10_000 + number).pk for number in range(args.burst)]
        saved_s = time.perf_counter() - started
        wait_done(burst_ids, timeout_s=600)
        burst_s = time.perf_counter() - started
        failed = Product.objects.filter(pk__in=burst_ids, status="failed").count()
        print(
            f"burst of {args.burst}: saved in {saved_s:.1f} s ({args.burst / saved_s:.0f} products/s), all "
            f"classified {burst_s:.1f} s after the first save: {args.burst / burst_s:.0f} images/s "
            f"({failed} failed)"
        )
        print(
            f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        if on_servers:
            drop_postgres_database(database_url)
        shutil.rmtree(scratch, ignore_errors=True)


def newest_artifact(models_dir: pathlib.Path) -> pathlib.Path | None:
    candidates = sorted(models_dir.glob("*/metadata.json"), key=lambda path: path.stat().st_mtime)
    return candidates[-1].parent if candidates else None


def sample_photos(datasets_dir: pathlib.Path) -> list[tuple[str, bytes]]:
    """Real product photos (clothing-small) when present, else drawn ones."""
    files = sorted((datasets_dir / "clothing-small" / "validation").glob("*/*.jpg"))[::10][:40]
    if files:
        return [(path.name, path.read_bytes()) for path in files]
    import io

    from PIL import Image, ImageDraw

    photos = []
    for number in range(10):
        photo = Image.new("RGB", (400, 400), (250, 250, 250))
        ImageDraw.Draw(photo).rectangle((100, 60 + number * 5, 300, 360), fill=(40 + number * 10, 40, 60))
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG")
        photos.append((f"drawn-{number}.jpg", buffer.getvalue()))
    return photos


def start_worker(*, log_path: pathlib.Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config.celery_app",
        "worker",
        "--pool",
        "solo",
        "--queues",
        "inference",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log = log_path.open("wb")
    worker = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b" ready." not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    return worker


if __name__ == "__main__":
    main()
