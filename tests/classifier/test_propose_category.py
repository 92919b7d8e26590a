"""The review queue's "new categories to consider": photos of none of the shop's categories that look alike
are offered as one group, and one click creates the category and files them under it."""

import itertools
from decimal import Decimal

import numpy as np
import pytest

from catalog.models import Category, Product
from catalog.services.products import product_create
from classifier.ml.clusters import alike_groups
from classifier.models import ModelVersion
from classifier.services.classification import PhotoPrediction, prediction_record
from tests.catalog.photo_copies import product_photo, upload
from tests.classifier.embedding_directions import DIMENSIONS, direction
from tests.roles import caller_user

QUEUE_URL = "/admin/catalog/reviewqueueitem/"
NEW_CATEGORY_URL = "/admin/catalog/reviewqueueitem/new-category/"
skus = itertools.count(1)


def test_alike_photos_form_groups_of_the_minimum_size_largest_first() -> None:
    scarves = [direction(0, tilt) for tilt in (0.0, 0.1, 0.2, 0.15)]
    hats = [direction(3, tilt) for tilt in (0.0, 0.1, 0.05)]
    loners = [direction(6), direction(7)]
    no_embedding = np.zeros(DIMENSIONS)
    embeddings = np.stack(
        [hats[0], *scarves[:2], loners[0], *hats[1:], *scarves[2:], no_embedding, loners[1]]
    )

    groups = alike_groups(embeddings, similarity=0.65, min_size=3)

    assert [group.tolist() for group in groups] == [[1, 2, 6, 7], [0, 4, 5]]
    unit = embeddings[groups[0]] / np.linalg.norm(embeddings[groups[0]], axis=1, keepdims=True)
    pairs = (unit @ unit.T)[np.triu_indices(len(unit), k=1)]
    assert pairs.mean() >= 0.65
    assert [group.tolist() for group in alike_groups(embeddings, similarity=0.65, min_size=4)] == [
        [1, 2, 6, 7]
    ]
    # Unlike photos stay apart however few a group needs.
    assert alike_groups(np.stack(loners), similarity=0.65, min_size=2) == []
    assert alike_groups(np.zeros((0, DIMENSIONS)), similarity=0.65, min_size=2) == []


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(
        name="v1",
        artifact_path="v1",
        model_sha256="0" * 64,
        architecture="starter_effnet_lite2",
        class_names=["Shirt", "Trouser"],
        threshold=0.9,
        is_active=True,
    )


def waiting(name: str, version: ModelVersion, *, embedding: np.ndarray, unfamiliar: bool = True) -> Product:
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
            label="Shirt",
            confidence=0.5,
            top=[("Shirt", 0.5), ("Trouser", 0.4)],
            ood_score=900.0 if unfamiliar else 10.0,
            is_unfamiliar=unfamiliar,
            embedding=embedding.tobytes(),
        ),
        model_version=version,
    )


@pytest.fixture
def scarves(version: ModelVersion) -> list[Product]:
    """Three unfamiliar photos alike, beside an unlike unfamiliar one and an alike one merely doubted."""
    alike = [
        waiting(f"Scarf {n}", version, embedding=direction(0, tilt)) for n, tilt in enumerate((0, 0.1, 0.2))
    ]
    waiting("Lone lamp", version, embedding=direction(5))
    waiting("Doubtful shirt", version, embedding=direction(0, 0.05), unfamiliar=False)
    return alike


def section(page: str) -> str:
    start = page.index('id="new-categories"')
    return page[start : page.index("</section>", start)]


@pytest.mark.django_db
def test_the_queue_proposes_the_alike_unfamiliar_photos_as_a_new_category(admin_client, scarves) -> None:
    page = admin_client.get(QUEUE_URL).content.decode()

    proposal = section(page)
    assert "New categories to consider" in proposal and "3 photos alike" in proposal
    assert f'value="{",".join(str(product.pk) for product in scarves)}"' in proposal
    assert all(product.image.url in proposal for product in scarves)
    assert "Lone lamp" not in proposal and "Doubtful shirt" not in proposal
    assert Product.objects.get(name="Scarf 0").get_review_reason_display() == "Not one of your categories"
    assert page.index('id="new-categories"') < page.index('id="result_list"')


@pytest.mark.django_db
def test_one_click_creates_the_category_and_files_the_photos_as_reviewed_labels(
    admin_client, admin_user, scarves
) -> None:
    photos = ",".join(str(product.pk) for product in scarves)

    response = admin_client.post(
        NEW_CATEGORY_URL, {"photos": photos, "name": "  Silk   scarves "}, follow=True
    )

    page = response.content.decode()
    assert "Category Silk scarves created; 3 photos filed under it." in page
    category = Category.objects.get(name="Silk scarves")
    assert category.slug == "silk-scarves" and category.is_active
    for product in Product.objects.filter(pk__in=[product.pk for product in scarves]):
        assert product.category == category
        assert product.category_source == Product.CategorySource.PERSON
        assert product.status == Product.Status.CLASSIFIED
        assert product.reviewed_by == admin_user and product.reviewed_at is not None
    assert 'id="new-categories"' not in page
    assert "Scarf 0" not in page and "Lone lamp" in page and "Doubtful shirt" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("   ", "Name the new category (letters or digits)."),
        ("shirt", "A category named shirt already exists; choose another name."),
        ("x" * 101, "A category name has at most 100 characters."),
    ],
)
def test_a_blank_or_taken_name_is_refused_and_the_form_keeps_what_was_typed(
    admin_client, scarves, name, error
) -> None:
    photos = ",".join(str(product.pk) for product in scarves)

    response = admin_client.post(NEW_CATEGORY_URL, {"photos": photos, "name": name}, follow=True)

    proposal = section(response.content.decode())
    assert f'<p class="errornote">{error}</p>' in proposal
    assert f'value="{name}"' in proposal
    assert list(Category.objects.values_list("name", flat=True)) == ["Shirt"]
    assert Product.objects.filter(status=Product.Status.NEEDS_REVIEW).count() == 5
    # The error is shown once: the next visit shows the proposal as new.
    assert "errornote" not in section(admin_client.get(QUEUE_URL).content.decode())


@pytest.mark.django_db
def test_a_request_without_photos_creates_nothing(admin_client, scarves) -> None:
    response = admin_client.post(NEW_CATEGORY_URL, {"photos": "", "name": "Scarves"}, follow=True)

    assert "No photos were given for the new category; nothing was created." in response.content.decode()
    assert not Category.objects.filter(name="Scarves").exists()


@pytest.mark.django_db
def test_photos_decided_meanwhile_create_nothing_and_say_so(admin_client, scarves) -> None:
    trousers = Category.objects.create(name="Trousers", slug="trousers")
    first = scarves[0]
    admin_client.post(
        f"/admin/catalog/reviewqueueitem/{first.pk}/set-category/", {f"category-for-{first.pk}": trousers.pk}
    )
    photos = ",".join(str(product.pk) for product in scarves)

    response = admin_client.post(NEW_CATEGORY_URL, {"photos": photos, "name": "Scarves"}, follow=True)

    page = response.content.decode()
    assert "1 of these photos no longer waits for review; nothing was created." in page
    assert not Category.objects.filter(name="Scarves").exists()
    assert Product.objects.get(pk=first.pk).category == trousers
    assert (
        Product.objects.filter(pk__in=[p.pk for p in scarves[1:]], status=Product.Status.NEEDS_REVIEW).count()
        == 2
    )


@pytest.mark.django_db
def test_a_catalog_editor_sees_the_proposal_and_a_viewer_does_not(client, scarves) -> None:
    client.force_login(caller_user("catalog editor"))
    assert "New categories to consider" in client.get(QUEUE_URL).content.decode()

    client.force_login(caller_user("viewer"))
    page = client.get(QUEUE_URL).content.decode()
    assert "Scarf 0" in page and "New categories to consider" not in page
