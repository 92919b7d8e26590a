"""How fast the admin's bulk import previews and saves rows (catalog.services.imports), in this process.

    python bench/product_import.py [--rows 500] [--photo-size 256] [--chunk-size 50]

Needs PostgreSQL and Redis (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/
vitrine_bench_import, created and dropped; BENCH_BROKER_URL, default redis://127.0.0.1:6379/12, where the
classification and chunk messages are published and then deleted). Builds a CSV of --rows products and a ZIP
of noisy JPEG photos (--photo-size pixels square: they compress like photos), then prints:
  1. the preview (every row and photo checked, nothing saved): rows per second;
  2. the import job's chunks run one after another, as a jobs worker does: rows saved per second
     (each through product_create: photo checked, re-encoded, stored, colours named, classification queued).
Goal: a 500-row import previews in under 10 s and saves in under a minute on 2 shared cores.
"""

import argparse
import csv
import io
import os
import pathlib
import random
import shutil
import sys
import tempfile
import time
import urllib.parse
import zipfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/vitrine_bench_import"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
PREVIEW_GOAL_S = 10.0
IMPORT_GOAL_S = 60.0


def postgres_database(url: str, *, create: bool) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            admin.execute(f'CREATE DATABASE "{name}"')


def import_files(*, rows: int, photo_size: int) -> tuple[bytes, bytes]:
    """(CSV, ZIP) of `rows` good products, each with its own noisy JPEG."""
    from PIL import Image

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["sku", "name", "price", "description", "image"])
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", zipfile.ZIP_STORED) as archive:
        for number in range(rows):
            pixels = random.Random(number).randbytes(photo_size * photo_size * 3)
            photo = io.BytesIO()
            Image.frombytes("RGB", (photo_size, photo_size), pixels).save(photo, format="JPEG", quality=85)
            archive.writestr(f"photos/{number:05d}.jpg", photo.getvalue())
            writer.writerow(
                [f"BENCH-{number:05d}", f"Bench product {number}", "19,90", "", f"{number:05d}.jpg"]
            )
    return text.getvalue().encode(), archive_bytes.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--photo-size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=50)
    args = parser.parse_args()
    if args.rows < 1 or args.photo_size < 8 or args.chunk_size < 1:
        raise SystemExit("--rows and --chunk-size must be at least 1, --photo-size at least 8")

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="vitrine-bench-import-"))
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL)
    postgres_database(database_url, create=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_MEDIA_ROOT": str(scratch / "media"),
            "DJANGO_LOG_LEVEL": "WARNING",
            "VITRINE_IMPORT_CHUNK_SIZE": str(args.chunk_size),
        }
    )
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from catalog.models import ProductImport
    from catalog.services.imports import (
        product_import_chunk_run,
        product_import_preview,
        product_import_start,
    )
    from classifier.ml.machine import machine_line

    try:
        call_command("migrate", verbosity=0)
        csv_bytes, zip_bytes = import_files(rows=args.rows, photo_size=args.photo_size)
        print(f"machine: {machine_line()}")
        print(f"files: {args.rows} rows, ZIP {len(zip_bytes) / 1048576:.1f} MB of {args.photo_size} px JPEGs")

        started = time.perf_counter()
        job = product_import_preview(
            csv_file=SimpleUploadedFile("bench.csv", csv_bytes),
            zip_file=SimpleUploadedFile("bench.zip", zip_bytes),
        )
        preview_s = time.perf_counter() - started
        print(
            f"preview: {preview_s:.2f} s, {args.rows / preview_s:.0f} rows/s, {len(job.row_errors)} errors "
            f"(goal < {PREVIEW_GOAL_S:.0f} s for 500 rows)"
        )

        job = product_import_start(product_import=job)
        started = time.perf_counter()
        while job.status in (ProductImport.Status.QUEUED, ProductImport.Status.RUNNING):
            product_import_chunk_run(import_id=job.pk, cursor=job.cursor)
            job.refresh_from_db()
        import_s = time.perf_counter() - started
        print(
            f"import: {import_s:.2f} s, {job.created / import_s:.0f} rows/s saved, {job.created} created, "
            f"{job.failed} failed, chunks of {args.chunk_size} (goal < {IMPORT_GOAL_S:.0f} s for 500 rows)"
        )
        print(f"load average {', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    finally:
        from django.db import connections

        connections.close_all()
        postgres_database(database_url, create=False)
        client = redis.Redis.from_url(broker_url)
        client.delete(settings.VITRINE_INFERENCE_QUEUE, settings.VITRINE_JOBS_QUEUE)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
