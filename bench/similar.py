"""The storefront's similar products: how often they share the query's category, and how fast they come.

    python bench/similar.py [--products 10000] [--requests 500]

Builds its own PostgreSQL database `<name>_similar_bench` beside the one DATABASE_URL names (dropped
afterwards; SQLite in a temporary folder without one) and an active model version row. Every photo of
clothing-small/validation becomes a published product of its category with the starter model's embedding
(the serving code the worker runs) on its Prediction row. Then:

- top-5: GET /api/v1/products/{id}/similar/?limit=5 for each of them; the share of the answers sharing the
  query's category (and of the first answers);
- latency: filler products (real embeddings plus noise, normalised) up to --products, then --requests GETs of
  /similar/?limit=10 for random products, in this process through Django's full request path (middleware,
  view, database, the index in memory) with the page cache off: p50 / p95 / p99 (goal p95 <= 50 ms with
  10,000 products on 2 cores), and the first request's load of the index apart.
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.parse
from decimal import Decimal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As config/wsgi.py sets it for the web process, before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.api_load import bench_settings, postgres_database_name  # noqa: E402
from bench.common import datasets_dir  # noqa: E402
from bench.likeness import embeddings, starter_classifier, validation_photos  # noqa: E402
from classifier.ml.machine import machine_line  # noqa: E402
from classifier.ml.preprocess import open_image  # noqa: E402
from classifier.ml.serving import configure_tensorflow  # noqa: E402

FILLER_NOISE = 0.5
BATCH = 1000


def postgres_admin(url: str, statement: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")), autocommit=True) as db:
        db.execute(statement)


def bench_database_url(*, temp_dir: pathlib.Path) -> str:
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{temp_dir / 'bench.sqlite3'}"
    parts = urllib.parse.urlsplit(configured)
    return urllib.parse.urlunsplit(
        parts._replace(path=f"/{parts.path.lstrip('/') or 'vitrine'}_similar_bench")
    )


def seed(
    *, labels: list[str], vectors: np.ndarray, first_number: int, version, categories: dict
) -> list[int]:
    """Published products with these categories and a prediction of `version` carrying each embedding."""
    from django.utils import timezone

    from catalog.models import Product
    from classifier.models import Prediction

    now = timezone.now()
    ids = []
    for start in range(0, len(labels), BATCH):
        products = Product.objects.bulk_create(
            Product(
                name=f"Bench product {number}",
                slug=f"bench-product-{number}",
                price=Decimal("9.99"),
                sku=f"BENCH-{number}",
                image=f"products/bench/{number}.jpg",
                image_sha256=f"{number:064x}",
                category=categories[label],
                status=Product.Status.CLASSIFIED,
                status_changed_at=now,
            )
            for number, label in enumerate(labels[start : start + BATCH], start=first_number + start)
        )
        Prediction.objects.bulk_create(
            Prediction(
                product=product,
                model_version=version,
                image_sha256=product.image_sha256,
                label=label,
                confidence=0.9,
                embedding=vector.astype(np.float16).tobytes(),
            )
            for product, label, vector in zip(
                products, labels[start : start + BATCH], vectors[start:], strict=False
            )
        )
        ids += [product.pk for product in products]
    return ids


def quantiles_line(milliseconds: list[float]) -> str:
    quantiles = statistics.quantiles(milliseconds, n=100)
    return f"p50 {quantiles[49]:.1f} ms, p95 {quantiles[94]:.1f} ms, p99 {quantiles[98]:.1f} ms"


def timed_get(client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"{path}: {response.status_code}")
    return (time.perf_counter() - started) * 1000


def similar_ids(client, product_id: int, limit: int) -> tuple[list[int], float]:
    started = time.perf_counter()
    response = client.get(f"/api/v1/products/{product_id}/similar/?limit={limit}")
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or response.json()["reason"] is not None:
        raise SystemExit(f"/similar/ for {product_id}: {response.status_code} {response.content[:200]!r}")
    return [row["id"] for row in response.json()["results"]], elapsed


def category_agreement(*, client, real_ids: list[int], labels: list[str]) -> None:
    """Top-5 answers sharing the query's category, over the validation photos only."""
    category_of = dict(zip(real_ids, labels, strict=True))
    shared = first_shared = 0
    for product_id in real_ids:
        found, _ = similar_ids(client, product_id, 5)
        shared += sum(category_of[other] == category_of[product_id] for other in found)
        first_shared += category_of[found[0]] == category_of[product_id]
    print(
        f"top-5 similar sharing the query's category: {shared / (5 * len(real_ids)):.1%} "
        f"(first answer: {first_shared / len(real_ids):.1%}) over {len(real_ids)} products"
    )


def filler_vectors(
    vectors: np.ndarray, *, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(which real photo each filler copies, its embedding: that photo's plus noise, normalised)."""
    sources = rng.integers(0, len(vectors), size=count)
    noisy = vectors[sources] + rng.normal(
        0, FILLER_NOISE / np.sqrt(vectors.shape[1]), (count, vectors.shape[1])
    )
    return sources, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def latency(*, client, queries: np.ndarray) -> None:
    from catalog.models import Product
    from classifier.services.similarity import product_duplicate_check_embedding, products_similar

    _, first = similar_ids(client, int(queries[0]), 10)
    print(f"first request (loads the index): {first * 1000:.0f} ms")
    latencies = [similar_ids(client, int(product_id), 10)[1] * 1000 for product_id in queries]
    print(f"/similar/?limit=10, {len(queries)} requests: {quantiles_line(latencies)} (goal p95 <= 50 ms)")
    products = Product.objects.in_bulk([int(product_id) for product_id in queries])
    searches = []
    for product_id in queries:
        started = time.perf_counter()
        products_similar(product=products[int(product_id)], limit=10)
        searches.append((time.perf_counter() - started) * 1000)
    print(f"  the search alone (services.similarity.products_similar): {quantiles_line(searches)}")
    checks = []
    for product_id in queries[:20]:
        product = products[int(product_id)]
        embedding = product.predictions.values_list("embedding", flat=True).get()
        started = time.perf_counter()
        product_duplicate_check_embedding(
            product_id=product.pk,
            model_version_id=product.predictions.get().model_version_id,
            embedding=embedding,
        )
        checks.append((time.perf_counter() - started) * 1000)
    print(f"worker's duplicate check by embedding, median per photo: {statistics.median(checks):.0f} ms")
    details = [timed_get(client, f"/api/v1/products/{int(product_id)}/") for product_id in queries]
    print(f"for comparison, GET /api/v1/products/{{id}}/ for the same products: {quantiles_line(details)}")


def measure(*, args: argparse.Namespace, labels: list[str], vectors: np.ndarray) -> None:
    from django.core.management import call_command
    from django.test import Client

    from catalog.models import Category
    from classifier.models import ModelVersion

    call_command("migrate", verbosity=0, interactive=False)
    names = sorted(set(labels))
    categories = {name: Category.objects.create(name=name, slug=name) for name in names}
    version = ModelVersion.objects.create(
        name="starter-bench",
        artifact_path="starter-bench",
        model_sha256="0" * 64,
        architecture="starter_effnet_lite2",
        class_names=names,
        is_active=True,
    )
    real_ids = seed(labels=labels, vectors=vectors, first_number=0, version=version, categories=categories)
    client = Client()
    category_agreement(client=client, real_ids=real_ids, labels=labels)

    rng = np.random.default_rng(0)
    sources, noisy = filler_vectors(vectors, count=args.products - len(real_ids), rng=rng)
    started = time.perf_counter()
    seed(
        labels=[labels[i] for i in sources],
        vectors=noisy,
        first_number=len(real_ids),
        version=version,
        categories=categories,
    )
    print(f"seeded {len(sources)} filler products in {time.perf_counter() - started:.1f} s")
    latency(client=client, queries=rng.choice(real_ids, size=args.requests))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--datasets-dir", type=pathlib.Path, default=datasets_dir())
    args = parser.parse_args()
    print(machine_line())
    print(configure_tensorflow())
    paths, labels = validation_photos(args.datasets_dir)
    if args.products < len(paths):
        parser.error(f"--products must be at least {len(paths)} (the validation photos)")
    vectors = embeddings(starter_classifier(), [open_image(path) for path in paths]).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="vitrine-similar-bench-") as temp:
        temp_dir = pathlib.Path(temp)
        database_url = bench_database_url(temp_dir=temp_dir)
        postgres_name = postgres_database_name(database_url)
        os.environ.update(
            bench_settings(database_url=database_url, media_root=temp_dir / "media", cache_seconds=0)
        )
        os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
        if postgres_name:
            postgres_admin(database_url, f'DROP DATABASE IF EXISTS "{postgres_name}"')
            postgres_admin(database_url, f'CREATE DATABASE "{postgres_name}"')
        print(f"database: {'PostgreSQL ' + postgres_name if postgres_name else 'SQLite (temporary file)'}")
        try:
            import django

            django.setup()
            measure(args=args, labels=labels, vectors=vectors)
        finally:
            if postgres_name:
                from django.db import connections

                connections.close_all()
                postgres_admin(database_url, f'DROP DATABASE IF EXISTS "{postgres_name}"')


if __name__ == "__main__":
    main()
