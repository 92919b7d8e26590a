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

Burst mode (--burst-workers 1,2 --mode batched,single --burst 2000): for each number of workers and each mode,
starts that many worker processes (each pinned to its share of this machine's cores, so TensorFlow and the
decoding pool size themselves to it), makes --burst products whose photos are stored, sends their messages at
once and prints images/s, p50/p95 from the send to the category, lost (never classified) and double-applied
(applied more than once: from the workers' logs); then the decode + forward floor of this machine, measured in
this process while no worker runs. "batched": VITRINE_INFERENCE_BATCH_SIZE (default 16); "single": 1.
With --kill-one (and one number of workers, at least 2), one worker is SIGKILLed once half the burst is done.
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
    parser.add_argument("--burst-workers", help="burst mode: numbers of worker processes, e.g. 1,2")
    parser.add_argument("--mode", default="batched,single", help="burst mode: batched, single or both")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="VITRINE_INFERENCE_BATCH_SIZE when batched"
    )
    parser.add_argument("--kill-one", action="store_true", help="burst mode: SIGKILL one worker midway")
    args = parser.parse_args()
    modes = args.mode.split(",")
    if not set(modes) <= {"batched", "single"}:
        parser.error(f"--mode takes batched, single or both (comma-separated), not {args.mode!r}")
    worker_counts = [int(count) for count in args.burst_workers.split(",")] if args.burst_workers else []
    if args.kill_one and (len(worker_counts) != 1 or worker_counts[0] < 2):
        parser.error("--kill-one needs one number of workers, at least 2: --burst-workers 2")

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
    from classifier.ml.machine import machine_line
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
        print(f"machine: {machine_line()}")
        if worker_counts:
            import pipeline_burst

            pipeline_burst.bursts(
                worker_counts=worker_counts,
                modes=modes,
                burst=args.burst,
                batch_size=args.batch_size,
                kill_one=args.kill_one,
                scratch=scratch,
            )
            return
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


def start_worker(
    *,
    log_path: pathlib.Path,
    env: dict[str, str] | None = None,
    cores: list[int] | None = None,
    hostname: str = "bench@%h",
) -> subprocess.Popen:
    """A solo inference worker; with `cores`, pinned to them (TensorFlow sizes its pools to those)."""
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
        "--hostname",
        hostname,
    ]
    log = log_path.open("wb")
    worker = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    if cores:
        # At once, before the worker starts a thread or sizes TensorFlow (seconds later, at its first import).
        os.sched_setaffinity(worker.pid, cores)
    deadline = time.monotonic() + 120
    while b" ready." not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    return worker


if __name__ == "__main__":
    main()
