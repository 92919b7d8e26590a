"""Possible duplicates: "this product looks like product X", recorded here only, never refused.

Two ways find one: the photo's perceptual hash when it is saved (below), and the classifier's embedding
when the prediction arrives (classifier.services.similarity calls product_duplicate_record). The first
flag a photo gets is kept until the photo changes (catalog.services.products clears it); a person decides.
"""

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageOps

from catalog.models import Product
from catalog.photo_hash import hash_distances, photo_hashes
from catalog.validators import ACCEPTED_FORMATS

DUPLICATE_FIELDS = ("duplicate_of", "duplicate_kind", "duplicate_score")


def product_duplicate_record(*, product_id: int, duplicate_of_id: int, kind: str, score: float) -> bool:
    """Records that the product looks like `duplicate_of_id`, unless its photo is flagged already.

    Returns whether it was recorded. Raises ValueError for an unknown kind or the product itself.
    """
    if kind not in (Product.DuplicateKind.HASH, Product.DuplicateKind.EMBEDDING):
        raise ValueError(f"unknown duplicate kind {kind!r}; expected hash or embedding")
    if product_id == duplicate_of_id:
        raise ValueError(f"product {product_id} cannot be a duplicate of itself")
    rows = Product.objects.filter(pk=product_id, duplicate_of__isnull=True).update(
        duplicate_of_id=duplicate_of_id, duplicate_kind=kind, duplicate_score=score
    )
    return rows == 1


def product_duplicate_check_hash(*, product: Product, mirror_hash: int) -> bool:
    """Flags the saved product when another product's photo hash lies within VITRINE_DUPLICATE_HASH_DISTANCE
    bits of its photo's or its mirror image's hash (the nearest, the oldest on a tie); returns whether."""
    if product.photo_hash is None:
        return False
    others = list(
        Product.objects.exclude(pk=product.pk)
        .filter(photo_hash__isnull=False)
        .order_by("pk")
        .values_list("pk", "photo_hash")
    )
    if not others:
        return False
    ids, hashes = np.array(others, dtype=np.int64).T
    distances = np.minimum(hash_distances(product.photo_hash, hashes), hash_distances(mirror_hash, hashes))
    nearest = int(np.argmin(distances))
    if distances[nearest] > settings.VITRINE_DUPLICATE_HASH_DISTANCE:
        return False
    return product_duplicate_record(
        product_id=product.pk,
        duplicate_of_id=int(ids[nearest]),
        kind=Product.DuplicateKind.HASH,
        score=float(distances[nearest]),
    )


@dataclass(frozen=True)
class HashesFilled:
    hashed: int
    flagged: int
    # One line per product whose photo could not be read: its id and why.
    problems: list[str]


def products_photo_hashes_fill() -> HashesFilled:
    """Hashes the stored photos of products saved before photos were hashed, oldest first, and flags those
    that look like a product hashed before them. Writes only the hash and flag columns."""
    hashed, flagged, problems = 0, 0, []
    for product in Product.objects.filter(photo_hash__isnull=True).order_by("pk").only("pk", "image"):
        try:
            with product.image.open("rb") as stored, Image.open(stored, formats=ACCEPTED_FORMATS) as photo:
                product.photo_hash, mirror_hash = photo_hashes(ImageOps.exif_transpose(photo))
        except (OSError, ValueError) as error:  # a missing file, or one Pillow cannot read
            problems.append(f"product {product.pk}: cannot read its photo {product.image.name} ({error})")
            continue
        Product.objects.filter(pk=product.pk).update(photo_hash=product.photo_hash)
        hashed += 1
        flagged += product_duplicate_check_hash(product=product, mirror_hash=mirror_hash)
    return HashesFilled(hashed=hashed, flagged=flagged, problems=problems)
