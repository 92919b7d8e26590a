"""The review queue's "most useful to label first" order: photos the model hesitates on between two
categories come first, and a photo like one already ahead of it waits its turn."""

import itertools
from decimal import Decimal

import numpy as np
import pytest

from catalog.models import Product
from catalog.services.products import product_create
from classifier.ml.active import label_next_order, margin_uncertainty
from classifier.models import ModelVersion
from classifier.services.classification import PhotoPrediction, prediction_record
from tests.catalog.photo_copies import product_photo, upload
from tests.classifier.embedding_directions import direction

QUEUE_URL = "/admin/catalog/reviewqueueitem/"
skus = itertools.count(1)


def waiting(
    name: str, version: ModelVersion, *, top: list[tuple[str, float]], embedding: np.ndarray
) -> Product:
    item = product_create(
        name=name,
        sku=f"SKU-{next(skus)}",
        price=Decimal("10.00"),
        image=upload(product_photo(seed=next(skus))),
    )
    return prediction_record(
        product_id=item.pk,
        image_sha256=item.image_sha256,
        prediction=PhotoPrediction(
            label=top[0][0], confidence=top[0][1], top=top, embedding=embedding.tobytes()
        ),
        model_version=version,
    )


def test_a_close_call_between_two_categories_is_more_uncertain_than_a_lone_low_confidence() -> None:
    uncertainty = margin_uncertainty(np.array([[0.50, 0.45, 0.05], [0.50, 0.10, 0.40], [0.30, 0.05, 0.65]]))
    assert uncertainty[0] > uncertainty[1] > uncertainty[2]


def test_a_photo_like_one_already_picked_gives_its_place_to_a_different_one() -> None:
    uncertainty = np.array([0.98, 0.97, 0.90, 0.75])
    twins = direction(0), direction(0, tilt=0.05)
    embeddings = np.stack([*twins, direction(2), direction(4)]).astype(np.float32)

    assert label_next_order(uncertainty, embeddings, window=4).tolist() == [0, 2, 3, 1]
    assert label_next_order(uncertainty, None, window=4).tolist() == [0, 1, 2, 3]
    # Places beyond the window follow by uncertainty alone.
    assert label_next_order(uncertainty, embeddings, window=1).tolist() == [0, 1, 2, 3]


@pytest.mark.django_db
def test_the_admin_orders_the_queue_by_what_a_label_would_teach_on_request(admin_client) -> None:
    version = ModelVersion.objects.create(
        name="v1",
        artifact_path="v1",
        model_sha256="0" * 64,
        architecture="starter_effnet_lite2",
        class_names=["Shirt", "Trouser", "Dress"],
        threshold=0.9,
        is_active=True,
    )
    waiting("Twin one", version, top=[("Shirt", 0.40), ("Trouser", 0.38)], embedding=direction(0))
    waiting("Twin two", version, top=[("Shirt", 0.41), ("Trouser", 0.38)], embedding=direction(0, 0.05))
    waiting("Lone dress", version, top=[("Dress", 0.45), ("Shirt", 0.35)], embedding=direction(2))
    waiting("Clear call", version, top=[("Trouser", 0.30), ("Shirt", 0.05)], embedding=direction(4))
    assert Product.objects.filter(status=Product.Status.NEEDS_REVIEW).count() == 4

    def names_in_order(page: str) -> list[str]:
        names = ["Twin one", "Twin two", "Lone dress", "Clear call"]
        return sorted(names, key=page.index)

    by_confidence = admin_client.get(QUEUE_URL).content.decode()
    assert names_in_order(by_confidence) == ["Clear call", "Twin one", "Twin two", "Lone dress"]
    assert "Most useful to label first" in by_confidence

    useful = admin_client.get(QUEUE_URL, {"order": "useful"})
    assert useful.status_code == 200
    assert names_in_order(useful.content.decode()) == ["Twin one", "Lone dress", "Clear call", "Twin two"]

    # The order combines with the queue's filter by suggestion.
    shirts = admin_client.get(
        QUEUE_URL,
        {
            "order": "useful",
            "suggested_category__id__exact": Product.objects.get(name="Twin one").suggested_category_id,
        },
    ).content.decode()
    assert "Lone dress" not in shirts and shirts.index("Twin one") < shirts.index("Twin two")
