"""The shop's categories in the admin: add, rename, merge and retire, and what predictions do with them."""

import pytest

from catalog.models import Category, Product
from tests.predictions import prediction_apply

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/catalog/category/"


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def predict(product: Product, *, label: str, confidence: float, model_version) -> Product:
    return prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label=label,
        confidence=confidence,
        model_version=model_version,
    )


def test_renaming_a_category_keeps_its_slug_and_its_products(admin_client, make_product, category):
    product = make_product(category=category)
    page = admin_client.get(f"{LIST_URL}{category.pk}/change/").content.decode()

    response = admin_client.post(
        f"{LIST_URL}{category.pk}/change/", {"name": "Shirts & blouses", "is_active": "on"}
    )

    assert response.status_code == 302
    assert 'name="slug"' not in page, "the slug links a category to model class names and stays fixed"
    category.refresh_from_db()
    assert (category.name, category.slug) == ("Shirts & blouses", "shirt")
    product.refresh_from_db()
    assert product.category == category


def test_a_renamed_category_still_receives_its_model_class(make_product, category, model_version):
    Category.objects.filter(pk=category.pk).update(name="Shirts & blouses")

    product = predict(make_product(), label="Shirt", confidence=0.99, model_version=model_version)

    assert product.category == category


def test_merge_asks_which_category_to_keep_then_moves_products_and_suggestions_in_one_step(
    admin_client, make_product, record_prediction, category, other_category, model_version
):
    blouse = Category.objects.create(name="Blouse", slug="blouse")
    filed = make_product(name="Silk blouse", category=blouse)
    suggested = record_prediction(
        make_product(name="Cotton blouse"), suggested=blouse, confidence=0.5, filed=False
    )
    untouched = make_product(name="Chinos", category=other_category)
    selection = {"action": "merge_categories", "_selected_action": [str(category.pk), str(blouse.pk)]}

    confirm_page = admin_client.post(LIST_URL, selection).content.decode()
    response = admin_client.post(
        LIST_URL, {**selection, "into": str(category.pk), "confirm_merge": "yes"}, follow=True
    )

    assert 'id="confirm-merge"' in confirm_page and f'name="into" value="{blouse.pk}"' in confirm_page
    assert messages_of(response) == [
        "Merged Blouse into Shirt: 1 product moved; "
        "the merged categories are retired and their predictions now file into it."
    ]
    filed.refresh_from_db()
    suggested.refresh_from_db()
    untouched.refresh_from_db()
    assert filed.category == category and filed.category_source == Product.CategorySource.PERSON
    assert suggested.suggested_category == category
    assert untouched.category == other_category
    blouse.refresh_from_db()
    assert not blouse.is_active and blouse.merged_into == category


def test_a_model_class_of_a_merged_category_files_into_the_category_kept(
    admin_client, make_product, category, model_version
):
    blouse = Category.objects.create(name="Blouse", slug="blouse")
    admin_client.post(
        LIST_URL,
        {
            "action": "merge_categories",
            "_selected_action": [str(category.pk), str(blouse.pk)],
            "into": str(category.pk),
            "confirm_merge": "yes",
        },
    )

    product = predict(make_product(), label="Blouse", confidence=0.99, model_version=model_version)

    assert (product.category, product.suggested_category, product.status) == (
        category,
        category,
        Product.Status.CLASSIFIED,
    )


def test_merging_needs_two_categories(admin_client, category):
    response = admin_client.post(
        LIST_URL, {"action": "merge_categories", "_selected_action": [str(category.pk)]}, follow=True
    )

    assert messages_of(response) == ["Select two or more categories to merge."]
    category.refresh_from_db()
    assert category.is_active


def test_a_retired_category_is_not_offered_and_its_predictions_wait_for_review(
    admin_client, make_product, category, other_category, model_version
):
    response = admin_client.post(
        LIST_URL, {"action": "retire_categories", "_selected_action": [str(category.pk)]}, follow=True
    )

    assert messages_of(response) == [
        "1 category retired: no longer offered; what the model files there waits for review."
    ]
    product = predict(make_product(), label="Shirt", confidence=0.99, model_version=model_version)
    assert product.status == Product.Status.NEEDS_REVIEW
    assert product.category is None and product.suggested_category == category
    add_page = admin_client.get("/admin/catalog/product/add/").content.decode()
    assert ">Shirt</option>" not in add_page and ">Trouser</option>" in add_page


def test_a_reactivated_category_files_products_again(admin_client, make_product, category, model_version):
    Category.objects.filter(pk=category.pk).update(is_active=False)

    admin_client.post(LIST_URL, {"action": "reactivate_categories", "_selected_action": [str(category.pk)]})

    product = predict(make_product(), label="Shirt", confidence=0.99, model_version=model_version)
    assert product.category == category and product.status == Product.Status.CLASSIFIED
