"""Photos alike by their embeddings (the backbone's pooled features, classifier.ml.serving): the possible
duplicate a new photo is flagged with, and the storefront's similar products.

Embeddings are L2-normalised, so a dot product is the cosine similarity; they are compared only within one
model version. Exact search in numpy: bench/similar.py measures it at 10,000 products. Keras-free.
"""

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Count, F, Max

from catalog.models import Product
from catalog.services.duplicates import product_duplicate_record
from classifier.models import ModelVersion, Prediction

EMBEDDING_DTYPE = np.float16
# A process looks for changes (three small queries) at most this often: the storefront's similar products
# may lag a new prediction, a publication or an activation by this long.
INDEX_RECHECK_S = 1.0


def embedding_vector(embedding: bytes) -> np.ndarray:
    return np.frombuffer(embedding, dtype=EMBEDDING_DTYPE).astype(np.float32)


def embeddings_current(
    *, model_version_id: int, published_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(product ids, one float32 row per product) for the products whose current photo has an embedding from
    this model version; published products only with `published_only`."""
    predictions = Prediction.objects.filter(
        model_version_id=model_version_id, embedding__isnull=False, image_sha256=F("product__image_sha256")
    )
    if published_only:
        predictions = predictions.filter(product__is_published=True)
    rows = list(predictions.order_by("product_id").values_list("product_id", "embedding"))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.fromiter((product_id for product_id, _ in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(bytes(embedding) for _, embedding in rows), dtype=EMBEDDING_DTYPE)
    return ids, vectors.reshape(len(rows), -1).astype(np.float32)


def product_duplicate_check_embedding(*, product_id: int, model_version_id: int, embedding: bytes) -> bool:
    """Flags the product with the other product whose current photo's embedding (same version) is the most
    similar, when at least VITRINE_DUPLICATE_SIMILARITY; returns whether it was recorded."""
    ids, vectors = embeddings_current(model_version_id=model_version_id)
    others = ids != product_id
    ids, vectors = ids[others], vectors[others]
    if not len(ids):
        return False
    similarities = vectors @ embedding_vector(embedding)
    best = int(np.argmax(similarities))
    if similarities[best] < settings.VITRINE_DUPLICATE_SIMILARITY:
        return False
    return product_duplicate_record(
        product_id=product_id,
        duplicate_of_id=int(ids[best]),
        kind=Product.DuplicateKind.EMBEDDING,
        score=round(float(similarities[best]), 4),
    )


@dataclass(frozen=True)
class SimilarIndex:
    """The published products' current embeddings of the active version, as of `stamp`."""

    stamp: tuple
    model_version_id: int | None
    product_ids: np.ndarray
    vectors: np.ndarray


_index: SimilarIndex | None = None
_index_checked_at = -math.inf
_index_lock = threading.Lock()


def _index_stamp() -> tuple:
    """Changes whenever the index would: a new prediction, an activation, a product saved, added or gone."""
    active_id = ModelVersion.objects.filter(is_active=True).values_list("pk", flat=True).first()
    products = Product.objects.aggregate(changed=Max("updated_at"), count=Count("pk"))
    latest_prediction = Prediction.objects.aggregate(latest=Max("pk"))["latest"]
    return active_id, latest_prediction, products["changed"], products["count"]


def similar_index() -> SimilarIndex:
    """The index, loaded lazily and kept in this process's memory until its stamp changes (looked at once
    per INDEX_RECHECK_S)."""
    global _index, _index_checked_at
    with _index_lock:
        if _index is not None and time.monotonic() < _index_checked_at + INDEX_RECHECK_S:
            return _index
        stamp = _index_stamp()
        _index_checked_at = time.monotonic()
        if _index is not None and _index.stamp == stamp:
            return _index
        active_id = stamp[0]
        ids, vectors = (
            embeddings_current(model_version_id=active_id, published_only=True)
            if active_id is not None
            else (np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
        )
        _index = SimilarIndex(stamp=stamp, model_version_id=active_id, product_ids=ids, vectors=vectors)
        return _index


class NoSimilar:
    """Why a product has no similar products to show (the API's `reason`)."""

    NO_ACTIVE_MODEL = "no_active_model"
    NO_EMBEDDING = "no_embedding"


@dataclass(frozen=True)
class Similar:
    # (product id, cosine similarity), the most similar first; empty with a reason when none can be computed.
    matches: list[tuple[int, float]]
    reason: str | None = None


def _index_vector(index: SimilarIndex, *, product_id: int) -> np.ndarray | None:
    """The product's row in the index (ids are sorted), saving a query for a published product."""
    row = int(np.searchsorted(index.product_ids, product_id))
    if row < len(index.product_ids) and index.product_ids[row] == product_id:
        return index.vectors[row]
    return None


def products_similar(*, product: Product, limit: int) -> Similar:
    """The published products most like `product` by their photos' embeddings (the product itself left out).

    No active version, or no embedding of the product's photo from it (not classified yet, or a model
    without features): no matches, and the reason (NoSimilar).
    """
    index = similar_index()
    if index.model_version_id is None:
        return Similar(matches=[], reason=NoSimilar.NO_ACTIVE_MODEL)
    query = _index_vector(index, product_id=product.pk)
    if query is None:
        embedding = (
            Prediction.objects.filter(
                product=product,
                model_version_id=index.model_version_id,
                image_sha256=product.image_sha256,
                embedding__isnull=False,
            )
            .values_list("embedding", flat=True)
            .first()
        )
        if embedding is None:
            return Similar(matches=[], reason=NoSimilar.NO_EMBEDDING)
        query = embedding_vector(bytes(embedding))
    if not len(index.product_ids):
        return Similar(matches=[])
    similarities = index.vectors @ query
    similarities[index.product_ids == product.pk] = -np.inf
    count = min(limit, int(np.isfinite(similarities).sum()))
    best = np.argpartition(-similarities, count - 1)[:count] if count else np.zeros(0, dtype=np.int64)
    best = best[np.argsort(-similarities[best], kind="stable")]
    return Similar(matches=[(int(index.product_ids[i]), float(similarities[i])) for i in best])
