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


class _SeenEmbeddings:
    """One model version's embeddings this process has read, by product (its latest prediction wins): each
    check reads only the predictions made since the last one, so it costs one small query and one product
    of a matrix and a vector, however large the catalog."""

    def __init__(self) -> None:
        self.last_pk = 0
        self.row_of: dict[int, int] = {}
        self.product_ids = np.zeros(0, dtype=np.int64)
        self.shas: list[str] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)

    def add(self, product_id: int, image_sha256: str, vector: np.ndarray) -> None:
        row = self.row_of.get(product_id)
        if row is None:
            row = len(self.row_of)
            self.row_of[product_id] = row
            if row >= len(self.product_ids):
                # Room doubles, so a catalog of n photos is copied about twice in all, not once per photo.
                size = max(64, 2 * len(self.product_ids))
                self.product_ids = np.resize(self.product_ids, size)
                grown = np.zeros((size, len(vector)), dtype=np.float32)
                if len(self.vectors):
                    grown[: len(self.vectors)] = self.vectors
                self.vectors = grown
                self.shas += [""] * (size - len(self.shas))
        self.product_ids[row] = product_id
        self.shas[row] = image_sha256
        self.vectors[row] = vector

    def read_new(self, *, model_version_id: int) -> None:
        new = (
            Prediction.objects.filter(
                model_version_id=model_version_id, embedding__isnull=False, pk__gt=self.last_pk
            )
            .order_by("pk")
            .values_list("pk", "product_id", "image_sha256", "embedding")
        )
        for pk, product_id, image_sha256, embedding in new.iterator(chunk_size=2000):
            self.add(product_id, image_sha256, embedding_vector(embedding))
            self.last_pk = pk


_seen: dict[int, _SeenEmbeddings] = {}
_seen_lock = threading.Lock()


def product_duplicate_check_embedding(*, product_id: int, model_version_id: int, embedding: bytes) -> bool:
    """Flags the product with the other product whose current photo's embedding (same version) is the most
    similar, when at least VITRINE_DUPLICATE_SIMILARITY; returns whether it was recorded."""
    with _seen_lock:
        seen = _seen.setdefault(model_version_id, _SeenEmbeddings())
        seen.read_new(model_version_id=model_version_id)
        count = len(seen.row_of)
        if count < 2:
            return False
        similarities = seen.vectors[:count] @ embedding_vector(embedding)
        own = seen.row_of.get(product_id)
        if own is not None:
            similarities[own] = -1.0
        order = np.argsort(-similarities)
        candidates = [
            (int(seen.product_ids[row]), seen.shas[row], float(similarities[row]))
            for row in order[:8]
            if similarities[row] >= settings.VITRINE_DUPLICATE_SIMILARITY
        ]
    # An embedding is of the photo it was made for: a product whose photo changed since, or gone, is no match.
    candidate_ids = [candidate for candidate, _, _ in candidates]
    current = dict(Product.objects.filter(pk__in=candidate_ids).values_list("pk", "image_sha256"))
    for candidate, image_sha256, similarity in candidates:
        if current.get(candidate) == image_sha256:
            return product_duplicate_record(
                product_id=product_id,
                duplicate_of_id=candidate,
                kind=Product.DuplicateKind.EMBEDDING,
                score=round(similarity, 4),
            )
    return False


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
