"""Embeddings kept with predictions: the possible duplicates they flag, and the storefront's similar
products."""

import itertools
from decimal import Decimal

import numpy as np
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Product
from catalog.services.products import product_create, product_update
from classifier.ml.serving import embeddings_normalised
from classifier.models import ModelVersion, Prediction
from classifier.services import similarity
from classifier.services.classification import PhotoPrediction, prediction_record
from classifier.services.model_versions import model_version_activate
from tests.catalog.photo_copies import product_photo, upload

DIMENSIONS = 16
skus = itertools.count(1)


def version(name: str, *, active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name,
        artifact_path=name,
        model_sha256="0" * 64,
        architecture="starter_effnet_lite2",
        class_names=["Shirt", "Trouser"],
        threshold=0.9,
        is_active=active,
    )


def vector(*weights: float) -> np.ndarray:
    """An embedding along the first axes with these weights (normalised as the serving code does)."""
    features = np.zeros((1, DIMENSIONS), dtype=np.float32)
    features[0, : len(weights)] = weights
    return embeddings_normalised(features)[0]


def product(name: str, *, seed: int, is_published: bool = True) -> Product:
    return product_create(
        name=name,
        sku=f"SKU-{next(skus)}",
        price=Decimal("10.00"),
        image=upload(product_photo(seed=seed)),
        is_published=is_published,
    )


def classified(item: Product, model_version: ModelVersion, embedding: np.ndarray | None) -> Product:
    """What the inference worker records for the product's photo, with this embedding."""
    return prediction_record(
        product_id=item.pk,
        image_sha256=item.image_sha256,
        prediction=PhotoPrediction(
            label="Shirt",
            confidence=0.5,
            top=[("Shirt", 0.5)],
            embedding=None if embedding is None else embedding.tobytes(),
        ),
        model_version=model_version,
    )


def similar(item: Product, client: APIClient | None = None, **params) -> dict:
    url = reverse("classifier-api:product-similar", kwargs={"id_or_slug": item.slug})
    return (client or APIClient()).get(url, params).json()


@pytest.fixture(autouse=True)
def index_always_checked(monkeypatch) -> None:
    """Each request looks for changes: these tests change predictions and products between requests."""
    monkeypatch.setattr(similarity, "INDEX_RECHECK_S", 0.0)
    monkeypatch.setattr(similarity, "_index", None)


@pytest.fixture
def v1(db) -> ModelVersion:
    return version("v1")


def test_the_serving_embedding_is_unit_length_float16() -> None:
    embeddings = embeddings_normalised(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert embeddings.dtype == np.float16
    assert np.allclose(embeddings[0], [0.6, 0.8], atol=1e-3)
    assert not np.isnan(embeddings).any()


def test_a_prediction_keeps_its_embedding(v1) -> None:
    item = classified(product("Shirt", seed=1), v1, vector(1, 2, 3))
    kept = Prediction.objects.get(product=item)
    assert np.array_equal(np.frombuffer(bytes(kept.embedding), dtype=np.float16), vector(1, 2, 3))


def test_a_photo_the_model_sees_as_the_same_is_flagged_once(v1) -> None:
    first = classified(product("Red dress", seed=1), v1, vector(1, 0.1))
    hat = classified(product("Blue hat", seed=2), v1, vector(0, 1))
    copy = classified(product("Red dress again", seed=3), v1, vector(1, 0.12))

    copy.refresh_from_db()
    assert copy.duplicate_of == first
    assert copy.duplicate_kind == Product.DuplicateKind.EMBEDDING
    assert copy.duplicate_score > 0.99
    first.refresh_from_db()
    assert first.duplicate_of is None

    # Another version that sees the copy like the hat does not move the flag: the first is kept.
    later = version("v2", active=False)
    classified(hat, later, vector(1, 0.12))
    classified(copy, later, vector(1, 0.12))
    copy.refresh_from_db()
    assert copy.duplicate_of == first


def test_only_embeddings_of_the_same_version_and_above_the_setting_flag(settings, v1) -> None:
    classified(product("Red dress", seed=1), v1, vector(1, 0))
    other_version = classified(product("Red dress v2", seed=2), version("v2", active=False), vector(1, 0))
    settings.VITRINE_DUPLICATE_SIMILARITY = 0.99
    close = classified(product("Reddish dress", seed=3), v1, vector(1, 0.3))  # cosine 0.958
    for item in (other_version, close):
        item.refresh_from_db()
        assert item.duplicate_of is None


def test_similar_products_come_most_similar_first_up_to_the_limit(v1) -> None:
    query = classified(product("Red dress", seed=1), v1, vector(1, 0, 0))
    far = classified(product("Blue hat", seed=2), v1, vector(0, 1, 0))
    near = classified(product("Pink dress", seed=3), v1, vector(1, 0.3, 0))
    nearer = classified(product("Red skirt", seed=4), v1, vector(1, 0.1, 0))

    answer = similar(query)
    assert answer["reason"] is None
    assert [row["id"] for row in answer["results"]] == [nearer.pk, near.pk, far.pk]
    assert answer["results"][0]["similarity"] > answer["results"][1]["similarity"] > 0.9
    assert answer["results"][0]["slug"] == nearer.slug
    assert [row["id"] for row in similar(query, limit=2)["results"]] == [nearer.pk, near.pk]


def test_unpublished_products_are_never_shown(v1) -> None:
    query = classified(product("Red dress", seed=1), v1, vector(1, 0))
    hidden = classified(product("Red dress draft", seed=2, is_published=False), v1, vector(1, 0.01))
    shown = classified(product("Blue hat", seed=3), v1, vector(0, 1))

    assert [row["id"] for row in similar(query)["results"]] == [shown.pk]
    response = APIClient().get(reverse("classifier-api:product-similar", kwargs={"id_or_slug": hidden.pk}))
    assert response.status_code == 404

    # Unpublishing after the index was built takes the product out of the next answer.
    product_update(product=shown, is_published=False)
    assert similar(query)["results"] == []


def test_without_embeddings_the_answer_is_empty_with_its_reason(db) -> None:
    without_version = product("Red dress", seed=1)
    assert similar(without_version) == {"reason": "no_active_model", "results": []}

    seed_model = version("seed")
    query = classified(without_version, seed_model, None)
    classified(product("Blue hat", seed=2), seed_model, None)
    assert similar(query) == {"reason": "no_embedding", "results": []}


def test_activating_another_version_switches_the_embeddings(v1) -> None:
    query = classified(product("Red dress", seed=1), v1, vector(1, 0))
    other = classified(product("Blue hat", seed=2), v1, vector(0, 1))
    assert [row["id"] for row in similar(query)["results"]] == [other.pk]

    model_version_activate(model_version=version("v2", active=False))
    assert similar(query) == {"reason": "no_embedding", "results": []}


@pytest.mark.parametrize("limit", ["0", "51", "many"])
def test_a_bad_limit_is_refused_by_name(v1, limit) -> None:
    query = classified(product("Red dress", seed=1), v1, vector(1, 0))
    response = APIClient().get(
        reverse("classifier-api:product-similar", kwargs={"id_or_slug": query.pk}), {"limit": limit}
    )
    assert response.status_code == 400
    assert "limit" in response.json()


def test_the_index_is_looked_at_again_only_after_the_recheck_interval(v1, monkeypatch) -> None:
    query = classified(product("Red dress", seed=1), v1, vector(1, 0))
    hat = classified(product("Blue hat", seed=2), v1, vector(0, 1))
    monkeypatch.setattr(similarity, "INDEX_RECHECK_S", 3600.0)
    assert [row["id"] for row in similar(query)["results"]] == [hat.pk]

    skirt = classified(product("Red skirt", seed=3), v1, vector(1, 0.1))
    assert [row["id"] for row in similar(query)["results"]] == [hat.pk]
    monkeypatch.setattr(similarity, "INDEX_RECHECK_S", 0.0)
    assert [row["id"] for row in similar(query)["results"]] == [skirt.pk, hat.pk]
