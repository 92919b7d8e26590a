"""Latency of the storefront's product list under concurrent clients, served by gunicorn on 127.0.0.1.

    python bench/api_load.py [--products 1000] [--clients 4] [--requests 2000] [--seconds 60]
                             [--workers 2] [--threads 2] [--cache-seconds 60]

Builds its own database: a SQLite file in a temporary folder, or, when DATABASE_URL names a PostgreSQL
server, a fresh database `<name>_api_bench` on it (dropped afterwards). Migrates it, bulk-creates --products
published products in 10 categories (photos are file names only: the list serves their URLs, never the
bytes), counts the SQL queries of one GET /api/v1/products/?limit=100, then starts gunicorn (sync workers,
or gthread with --threads > 1) with the production settings and sends anonymous requests from --clients
threads (http.client, keep-alive), each phase stopping after --seconds at the latest:

- cold cache: every request a page nobody asked for yet (?limit=100&offset=N, N different each time);
- warm cache: --requests requests for GET /api/v1/products/?limit=100;
- 304: the same with the ETag the client holds (If-None-Match);
- staleness: a product on that page changed as the admin (catalog.services.products.product_update) and as
  the worker (QuerySet.update in a transaction) would; seconds until the API shows it (goal <= 1 s).

Prints p50 / p95 / p99 latency and throughput per phase; goal: p95 <= 50 ms for a page of 100. The page
cache is Redis (REDIS_CACHE_URL, else beside the broker: redis://127.0.0.1:6379/14); --cache-seconds 0
turns it off, for the figures without it. The anonymous throttle is raised for the run, so every request is
served; clients and server share this machine's cores.
"""

import argparse
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from decimal import Decimal

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from classifier.ml.machine import machine_line  # noqa: E402

LIST_PATH = "/api/v1/products/?limit=100"
PAGE_SIZE = 100
CATEGORY_COUNT = 10
WARMUP_REQUESTS = 40
SERVER_START_TIMEOUT_S = 30


class BenchError(Exception):
    """A step of the benchmark could not run; the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_database_url(*, temp_dir: pathlib.Path) -> str:
    """SQLite in temp_dir, or a fresh `<name>_api_bench` beside the PostgreSQL database DATABASE_URL names."""
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{temp_dir / 'bench.sqlite3'}"
    parts = urllib.parse.urlsplit(configured)
    name = f"{parts.path.lstrip('/') or 'vitrine'}_api_bench"
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _postgres_admin(url: str, statement: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(statement)


def postgres_database_name(url: str) -> str | None:
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    return urllib.parse.urlsplit(url).path.lstrip("/")


def bench_settings(*, database_url: str, media_root: pathlib.Path, cache_seconds: int) -> dict[str, str]:
    """Environment for both this process (seeding, query count, the changes) and gunicorn."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "api-load-bench-only",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        # Required by production settings; the list endpoint never publishes a task.
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
        # Plain HTTP straight to gunicorn, as the proxy in front of it would speak after TLS.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_MEDIA_ROOT": str(media_root),
        "DJANGO_LOG_LEVEL": "WARNING",
        # Measure serving, not refusing: the throttle still runs, at a rate no client reaches. Per second, so
        # the history it keeps for the one client address here stays as short as a real visitor's (120/min).
        "VITRINE_API_ANON_RATE": "100000000/s",
        "REDIS_CACHE_URL": os.environ.get("REDIS_CACHE_URL", "redis://127.0.0.1:6379/14"),
        "VITRINE_API_CACHE_SECONDS": str(cache_seconds),
        "PYTHONPATH": str(REPO_ROOT),
    }


def seed_catalog(*, product_count: int) -> None:
    from django.core.management import call_command
    from django.utils import timezone

    from catalog.models import Category, Product

    call_command("migrate", verbosity=0, interactive=False)
    if Product.objects.exists():
        raise BenchError("the bench database already holds products; it must start empty")
    categories = Category.objects.bulk_create(
        Category(name=f"Category {number}", slug=f"category-{number}") for number in range(CATEGORY_COUNT)
    )
    now = timezone.now()
    Product.objects.bulk_create(
        (
            Product(
                name=f"Bench product {number:05d}",
                slug=f"bench-product-{number:05d}",
                description="A product created for the API load benchmark.",
                price=Decimal(number % 500) + Decimal("0.99"),
                sku=f"BENCH-{number:05d}",
                image=f"products/{number % 256:02x}/bench-{number:05d}.jpg",
                image_sha256=f"{number:064x}",
                category=categories[number % CATEGORY_COUNT],
                status=Product.Status.CLASSIFIED,
                status_changed_at=now,
            )
            for number in range(product_count)
        ),
        batch_size=500,
    )


def list_query_counts() -> tuple[int, int]:
    """SQL queries of GET LIST_PATH in-process: (a page not in the cache, the same page again)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from catalog.storefront_cache import catalog_generation_replace

    client = Client(HTTP_HOST="127.0.0.1")
    client.get(LIST_PATH)  # the first request loads Django's lazy pieces; count steady-state ones
    counts = []
    catalog_generation_replace()
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(LIST_PATH)
        if response.status_code != 200 or len(response.json()["results"]) != PAGE_SIZE:
            raise BenchError(
                f"GET {LIST_PATH} answered {response.status_code} in-process; expected a full page"
            )
        counts.append(len(queries.captured_queries))
    return counts[0], counts[1]


def start_server(*, env: dict[str, str], port: int, workers: int, threads: int, log_path: pathlib.Path):
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--keep-alive",
        "5",
        "--log-level",
        "warning",
    ]
    log = log_path.open("wb")
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"gunicorn exited with {server.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            status, _, _ = fetch(http.client.HTTPConnection("127.0.0.1", port, timeout=5), LIST_PATH)
            if status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise BenchError(
        f"gunicorn did not answer within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}"
    )


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def fetch(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str | None]:
    """(status, body, ETag) of GET path."""
    connection.request("GET", path, headers={"Accept": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response.status, response.read(), response.getheader("ETag")


def answer_ok(status: int, body: bytes, *, expected_status: int) -> bool:
    if status != expected_status:
        return False
    return status == 304 or len(json.loads(body)["results"]) == PAGE_SIZE


def load(
    *, port: int, clients: int, paths: list[str], seconds: float, headers: dict[str, str] | None = None
) -> tuple[list[float], int, float]:
    """(latencies in ms, failed requests, wall seconds) for GET of each of `paths`, spread over `clients`
    threads; with If-None-Match in `headers` a request succeeds with 304, else with a full page."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    queue = list(reversed(paths))
    deadline = time.monotonic() + seconds
    expected_status = 304 if headers and "If-None-Match" in headers else 200

    def client() -> None:
        nonlocal failures
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    break
                path = queue.pop()
            started = time.perf_counter()
            try:
                status, body, _ = fetch(connection, path, headers)
                # Timed up to the last byte received; checking the page is the client's own work.
                elapsed_ms = (time.perf_counter() - started) * 1000
                ok = answer_ok(status, body, expected_status=expected_status)
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            with lock:
                if ok:
                    latencies.append(elapsed_ms)
                else:
                    failures += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def phase_line(name: str, latencies: list[float], failures: int, wall_s: float) -> str:
    if len(latencies) < 2:
        raise BenchError(f"{name}: only {len(latencies)} requests succeeded ({failures} failed)")
    return (
        f"  {name:<11} p50 {percentile(latencies, 0.50):5.1f}  p95 {percentile(latencies, 0.95):5.1f}  "
        f"p99 {percentile(latencies, 0.99):5.1f}  max {max(latencies):6.1f} ms  "
        f"{len(latencies) / wall_s:4.0f} requests/s  ({len(latencies)} ok / {failures} failed)"
    )


def first_product_name(port: int) -> tuple[int, str]:
    status, body, _ = fetch(http.client.HTTPConnection("127.0.0.1", port, timeout=5), LIST_PATH)
    if status != 200:
        raise BenchError(f"GET {LIST_PATH} answered {status}")
    first = json.loads(body)["results"][0]
    return first["id"], first["name"]


def change_as_the_admin(*, product_id: int, name: str) -> None:
    from catalog.models import Product
    from catalog.services.products import product_update

    product_update(product=Product.objects.get(pk=product_id), name=name)


def change_as_the_worker(*, product_id: int, name: str) -> None:
    from django.db import transaction
    from django.utils import timezone

    from catalog.models import Product

    # The worker's services write in a transaction, some with QuerySet.update (which sends no signal).
    with transaction.atomic():
        Product.objects.filter(pk=product_id).update(name=name, updated_at=timezone.now())


def seconds_until_shown(*, port: int, change, name: str, timeout_s: float = 5.0) -> float:
    """Seconds from the start of `change(product_id=, name=)` on the list's first product until the list
    served by gunicorn shows `name` there; the page is cached (warm) before the change."""
    product_id, _ = first_product_name(port)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    fetch(connection, LIST_PATH)
    started = time.perf_counter()
    change(product_id=product_id, name=name)
    while time.perf_counter() - started < timeout_s:
        status, body, _ = fetch(connection, LIST_PATH)
        if status == 200 and json.loads(body)["results"][0]["name"] == name:
            return time.perf_counter() - started
        time.sleep(0.002)
    raise BenchError(f"the API still did not show the change {timeout_s:.0f} s after it")


def run_phases(*, port: int, args: argparse.Namespace) -> list[str]:
    """The lines to print: cold, warm, 304 and staleness figures."""
    from catalog.storefront_cache import catalog_generation_replace

    lines = []
    catalog_generation_replace()
    cold_paths = [f"{LIST_PATH}&offset={offset}" for offset in range(args.products - PAGE_SIZE + 1)]
    cold_paths = cold_paths[: args.requests]
    lines.append(
        phase_line(
            "cold cache", *load(port=port, clients=args.clients, paths=cold_paths, seconds=args.seconds)
        )
    )
    warm_paths = [LIST_PATH] * args.requests
    lines.append(
        phase_line(
            "warm cache", *load(port=port, clients=args.clients, paths=warm_paths, seconds=args.seconds)
        )
    )
    _, _, etag = fetch(http.client.HTTPConnection("127.0.0.1", port, timeout=5), LIST_PATH)
    if etag is None:
        raise BenchError(f"GET {LIST_PATH} answered without an ETag")
    lines.append(
        phase_line(
            "304",
            *load(
                port=port,
                clients=args.clients,
                paths=warm_paths,
                seconds=args.seconds,
                headers={"If-None-Match": etag},
            ),
        )
    )
    for who, change in (("admin", change_as_the_admin), ("worker", change_as_the_worker)):
        shown_s = seconds_until_shown(port=port, change=change, name=f"Renamed by the {who}")
        lines.append(
            f"  staleness   the {who}'s change shown {shown_s * 1000:.0f} ms after it started (goal <= 1 s)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase, after a warm-up")
    parser.add_argument("--seconds", type=float, default=60, help="stop a phase after this long")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread if > 1)")
    parser.add_argument("--cache-seconds", type=int, default=60, help="VITRINE_API_CACHE_SECONDS; 0: off")
    args = parser.parse_args()
    if args.products < PAGE_SIZE:
        parser.error(f"--products must be at least {PAGE_SIZE} to fill a page")

    with tempfile.TemporaryDirectory(prefix="vitrine-api-bench-") as temp:
        temp_dir = pathlib.Path(temp)
        database_url = bench_database_url(temp_dir=temp_dir)
        postgres_name = postgres_database_name(database_url)
        settings_env = bench_settings(
            database_url=database_url, media_root=temp_dir / "media", cache_seconds=args.cache_seconds
        )
        os.environ.update(settings_env)
        if postgres_name:
            _postgres_admin(database_url, f'DROP DATABASE IF EXISTS "{postgres_name}"')
            _postgres_admin(database_url, f'CREATE DATABASE "{postgres_name}"')
        try:
            import django

            django.setup()
            from django.db import connections

            print(
                f"database: {'PostgreSQL ' + postgres_name if postgres_name else 'SQLite (temporary file)'}"
            )
            seed_started = time.perf_counter()
            seed_catalog(product_count=args.products)
            print(f"seeded {args.products} products in {time.perf_counter() - seed_started:.1f} s")
            queries = list_query_counts()
            connections.close_all()

            port = free_port()
            server = start_server(
                env=os.environ | settings_env,
                port=port,
                workers=args.workers,
                threads=args.threads,
                log_path=temp_dir / "gunicorn.log",
            )
            try:
                load(
                    port=port, clients=args.clients, paths=[LIST_PATH] * WARMUP_REQUESTS, seconds=args.seconds
                )
                lines = run_phases(port=port, args=args)
            finally:
                stop_server(server)
        finally:
            if postgres_name:
                from django.db import connections

                connections.close_all()
                _postgres_admin(database_url, f'DROP DATABASE IF EXISTS "{postgres_name}"')

    worker_kind = "gthread" if args.threads > 1 else "sync"
    cache = f"page cache {args.cache_seconds} s" if args.cache_seconds > 0 else "page cache off"
    print(
        f"GET {LIST_PATH}: gunicorn {args.workers} {worker_kind} worker(s) x {args.threads} thread(s), "
        f"{args.clients} clients, {cache}"
    )
    print(f"  SQL queries per request: {queries[0]} (page not cached), {queries[1]} (cached)")
    print("\n".join(lines))
    # Other work on the machine shows up as latency; say how busy it was.
    load_average = os.getloadavg()[0]
    print(f"  machine     {machine_line()}, 1-minute load average {load_average:.1f} after the run")


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(f"api_load: {error}")
