"""The review queue: products the model was unsure about, decided in one click by a staff member."""

import re

import pytest
from django.urls import reverse

from catalog.models import Category, Product
from classifier.services.training import training_set_collect

pytestmark = pytest.mark.django_db

QUEUE_URL = "/admin/catalog/reviewqueueitem/"


@pytest.fixture
def unsure(make_product, record_prediction, category):
    """unsure("Oxford shirt", confidence=0.41) -> a product waiting for review with `category` suggested."""

    def make(name: str, *, confidence: float, suggested: Category | None = None) -> Product:
        return record_prediction(
            make_product(name=name),
            suggested=suggested or category,
            confidence=confidence,
            status=Product.Status.NEEDS_REVIEW,
            filed=False,
        )

    return make


def accept_url(product: Product) -> str:
    return reverse("admin:catalog_reviewqueueitem_accept", args=[product.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_queue_lists_products_needing_review_least_sure_first_with_photo_suggestion_and_confidence(
    admin_client, unsure, make_product, record_prediction, category
):
    # The least sure is the oldest: the queue's order is by confidence, not by age.
    least_sure = unsure("Denim shirt", confidence=0.41)
    fairly_sure = unsure("Linen shirt", confidence=0.83)
    record_prediction(make_product(name="Filed shirt"), suggested=category, confidence=0.99)

    page = admin_client.get(QUEUE_URL).content.decode()

    assert page.index("Denim shirt") < page.index("Linen shirt")
    assert "Filed shirt" not in page
    assert f'<img src="/media/{least_sure.image.name}"' in page
    assert "41.0%" in page and "83.0%" in page
    assert f'id="accept-{least_sure.pk}"' in page and ">Accept suggestion</button>" in page
    assert f'id="category-for-{fairly_sure.pk}"' in page and f'id="set-category-{fairly_sure.pk}"' in page
    assert "<title>Review queue" in page


def test_accepting_a_suggestion_files_the_product_as_reviewed_training_data_and_empties_the_queue(
    admin_client, admin_user, unsure, category
):
    product = unsure("Denim shirt", confidence=0.41)

    response = admin_client.post(accept_url(product), follow=True)

    assert messages_of(response) == ["Denim shirt is filed under Shirt."]
    product.refresh_from_db()
    assert product.category == category
    assert product.category_source == Product.CategorySource.PERSON
    assert product.reviewed_by == admin_user and product.reviewed_at is not None
    assert product.status == Product.Status.CLASSIFIED
    assert "Denim shirt" not in admin_client.get(QUEUE_URL).content.decode()


def test_picking_another_category_corrects_the_label(admin_client, unsure, other_category):
    product = unsure("Wide trousers", confidence=0.52)

    response = admin_client.post(
        reverse("admin:catalog_reviewqueueitem_set_category", args=[product.pk]),
        {f"category-for-{product.pk}": str(other_category.pk)},
        follow=True,
    )

    assert messages_of(response) == ["Wide trousers is filed under Trouser."]
    product.refresh_from_db()
    assert (product.category, product.category_source) == (other_category, Product.CategorySource.PERSON)


def test_a_decision_is_posted_from_the_queue_page_itself(admin_client, unsure, other_category):
    product = unsure("Wide trousers", confidence=0.52)
    page = admin_client.get(QUEUE_URL).content.decode()

    # The buttons submit the changelist's form (which carries the CSRF token) to their own views.
    assert re.search(rf'id="set-category-{product.pk}" formaction="[^"]+/{product.pk}/set-category/"', page)
    assert f'<option value="{other_category.pk}">Trouser</option>' in page


def test_corrected_and_accepted_products_become_training_data(
    admin_client, unsure, make_product, category, other_category, settings
):
    settings.VITRINE_RETRAIN_MIN_PHOTOS_PER_CATEGORY = 1
    accepted = unsure("Denim shirt", confidence=0.41)
    corrected = unsure("Wide trousers", confidence=0.52)
    unsure("Still waiting", confidence=0.60)
    make_product(name="Filed on upload", category=other_category)

    admin_client.post(accept_url(accepted))
    admin_client.post(
        reverse("admin:catalog_reviewqueueitem_set_category", args=[corrected.pk]),
        {f"category-for-{corrected.pk}": str(other_category.pk)},
    )

    assert training_set_collect().photos_per_category == {"Shirt": 1, "Trouser": 2}


def test_bulk_accept_files_the_selected_products_and_reports_those_it_cannot(admin_client, unsure, category):
    retired = Category.objects.create(name="Sandal", slug="sandal", is_active=False)
    first = unsure("Denim shirt", confidence=0.41)
    second = unsure("Linen shirt", confidence=0.45)
    suggested_retired = unsure("Old sandal", confidence=0.30, suggested=retired)
    not_selected = unsure("Silk shirt", confidence=0.50)

    response = admin_client.post(
        QUEUE_URL,
        {
            "action": "accept_suggestions",
            "_selected_action": [str(first.pk), str(second.pk), str(suggested_retired.pk)],
        },
        follow=True,
    )

    assert messages_of(response) == [
        "2 products filed under their suggestions.",
        "Sandal is retired; choose an active category for Old sandal",
    ]
    filed = dict(Product.objects.values_list("name", "category_source"))
    assert filed["Denim shirt"] == filed["Linen shirt"] == Product.CategorySource.PERSON
    assert filed["Old sandal"] == filed["Silk shirt"] == Product.CategorySource.NONE
    assert not_selected.pk in set(Product.objects.filter(status="needs_review").values_list("pk", flat=True))


def test_a_retired_suggestion_has_no_accept_button_and_cannot_be_accepted(admin_client, unsure):
    retired = Category.objects.create(name="Sandal", slug="sandal", is_active=False)
    product = unsure("Old sandal", confidence=0.30, suggested=retired)

    page = admin_client.get(QUEUE_URL).content.decode()
    response = admin_client.post(accept_url(product), follow=True)

    assert f'id="accept-{product.pk}"' not in page and "Sandal <small>(retired)</small>" in page
    assert f'<option value="{retired.pk}"' not in page
    assert messages_of(response) == ["Sandal is retired; choose an active category for Old sandal"]
    product.refresh_from_db()
    assert product.category is None and product.status == Product.Status.NEEDS_REVIEW


def test_setting_no_category_is_refused_with_a_message(admin_client, unsure):
    product = unsure("Denim shirt", confidence=0.41)

    response = admin_client.post(
        reverse("admin:catalog_reviewqueueitem_set_category", args=[product.pk]), {}, follow=True
    )

    assert messages_of(response) == ["Choose a category for Denim shirt."]
    product.refresh_from_db()
    assert product.category is None


def test_decisions_need_a_post_from_staff(client, admin_client, unsure):
    product = unsure("Denim shirt", confidence=0.41)

    assert admin_client.get(accept_url(product)).status_code == 405
    anonymous = client.post(accept_url(product))
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    product.refresh_from_db()
    assert product.category is None


def test_a_queue_row_links_to_the_products_own_page(admin_client, unsure):
    product = unsure("Denim shirt", confidence=0.41)

    response = admin_client.get(f"{QUEUE_URL}{product.pk}/change/")

    assert response.status_code == 302
    assert response["Location"] == f"/admin/catalog/product/{product.pk}/change/"
