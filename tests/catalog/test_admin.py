"""The shop admin's screens, driven through the test client as a logged-in superuser."""

from decimal import Decimal

import pytest
from django.utils.html import escape

from catalog.models import Category, Product, ProductImage
from tests.catalog.bad_files import BAD_FILES, image_bytes

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/catalog/product/add/"
LIST_URL = "/admin/catalog/product/"


def change_url(product: Product) -> str:
    return f"/admin/catalog/product/{product.pk}/change/"


def product_form(*, image=None, more_images=(), initial_images: int = 0, **fields) -> dict:
    """The POST a browser sends from the product form: `more_images` fill inline rows, then one blank row."""
    data = {
        "name": "Linen shirt",
        "description": "White, long sleeves",
        "price": "39.90",
        "sku": "LS-100",
        "category": "",
        "is_published": "on",
        "images-TOTAL_FORMS": str(initial_images + len(more_images) + 1),
        "images-INITIAL_FORMS": str(initial_images),
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        **fields,
    }
    if image is not None:
        data["image"] = image
    for index, upload in enumerate(more_images, start=initial_images):
        data[f"images-{index}-image"] = upload
        data[f"images-{index}-position"] = str(index)
    data[f"images-{initial_images + len(more_images)}-position"] = "0"
    return data


def test_add_page_asks_only_for_what_a_person_enters(admin_client):
    page = admin_client.get(ADD_URL).content.decode()

    for field in ("name", "description", "price", "sku", "image", "category"):
        assert f'name="{field}"' in page
    assert 'accept="image/jpeg,image/png,image/webp,image/gif"' in page
    for prediction_field in ("status", "suggested_category", "confidence_percent", "model_version"):
        assert f"field-{prediction_field}" not in page


def test_adding_a_product_saves_it_pending_under_a_random_name_and_enqueues_once(
    admin_client, admin_user, make_upload, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(ADD_URL, product_form(image=make_upload("IMG_2041 linen.jpg")))

    assert response.status_code == 302, response.content.decode()[:2000]
    product = Product.objects.get()
    assert (product.name, product.sku, product.price) == ("Linen shirt", "LS-100", Decimal("39.90"))
    assert product.status == Product.Status.PENDING
    assert product.created_by == admin_user
    assert "IMG_2041" not in product.image.name and "linen" not in product.image.name
    assert (media_root / product.image.name).is_file()
    assert [pk for callback in callbacks for pk in callback.keywords["product_ids"]] == [product.pk]


def test_a_category_chosen_on_the_add_form_is_a_persons_choice(admin_client, make_upload, category):
    admin_client.post(ADD_URL, product_form(image=make_upload(), category=str(category.pk)))

    product = Product.objects.get()
    assert product.category == category
    assert product.category_source == Product.CategorySource.PERSON


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda bad: bad.case)
def test_a_bad_file_shows_the_form_error_and_stores_nothing(
    bad, admin_client, make_upload, stored_files, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(ADD_URL, product_form(image=make_upload(bad.name, content=bad.content)))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="errorlist' in page
    assert escape(bad.message) in page
    assert Product.objects.count() == 0
    assert stored_files() == []
    assert callbacks == []


def test_a_file_over_the_cap_shows_the_form_error_and_stores_nothing(
    settings, admin_client, make_upload, stored_files
):
    settings.VITRINE_MAX_UPLOAD_BYTES = 3_000
    upload = make_upload("big.png", image_format="PNG", size=(64, 64), noise=True)

    response = admin_client.post(ADD_URL, product_form(image=upload))

    expected = (
        f"big.png: the file is {upload.size / 1024:.1f} KB; the limit is 2.9 KB. Upload a smaller photo."
    )
    assert expected in response.content.decode()
    assert Product.objects.count() == 0
    assert stored_files() == []


def test_a_product_without_an_image_is_refused(admin_client):
    response = admin_client.post(ADD_URL, product_form())

    assert "This field is required." in response.content.decode()
    assert Product.objects.count() == 0


def test_more_images_are_stored_under_random_names(admin_client, make_upload, media_root):
    extra = make_upload("back view.png", image_format="PNG", colour=(0, 0, 0))

    response = admin_client.post(ADD_URL, product_form(image=make_upload(), more_images=[extra]))

    assert response.status_code == 302
    product = Product.objects.get()
    [more] = product.images.all()
    assert "back" not in more.image.name and more.image.name.endswith(".png")
    assert (media_root / more.image.name).is_file()


def test_a_bad_extra_image_refuses_the_whole_product_and_stores_nothing(
    admin_client, make_upload, stored_files
):
    bad = make_upload("back.jpg", content=image_bytes("PNG"))

    response = admin_client.post(ADD_URL, product_form(image=make_upload(), more_images=[bad]))

    assert (
        escape("back.jpg: the content is a PNG image but the name ends in .jpg") in response.content.decode()
    )
    assert Product.objects.count() == 0 and ProductImage.objects.count() == 0
    assert stored_files() == []


def test_change_page_shows_status_suggestion_confidence_and_model_version(
    admin_client, make_product, category, record_prediction, model_version
):
    product = record_prediction(
        make_product(), suggested=category, confidence=0.875, status=Product.Status.NEEDS_REVIEW, filed=False
    )

    page = admin_client.get(change_url(product)).content.decode()

    assert "field-status" in page and "field-confidence_percent" in page
    assert "Needs review" in page
    assert "87.5%" in page
    assert model_version.name in page
    assert (
        f'<div class="readonly"><a href="/admin/catalog/category/{category.pk}/change/">Shirt</a></div>'
        in page
    )


def test_change_page_of_a_failed_product_shows_the_error_text(admin_client, make_product):
    product = make_product()
    Product.objects.filter(pk=product.pk).update(
        status=Product.Status.FAILED, classification_error="Worker timed out after 30 s"
    )

    page = admin_client.get(change_url(product)).content.decode()

    assert "Failed" in page
    assert "Worker timed out after 30 s" in page


def test_editing_the_price_in_the_admin_enqueues_nothing(
    admin_client, make_product, category, record_prediction, django_capture_on_commit_callbacks
):
    product = record_prediction(make_product(sku="P-1"), suggested=category, confidence=0.99)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            change_url(product),
            product_form(name=product.name, sku="P-1", price="12.50", category=str(category.pk)),
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert callbacks == []
    product.refresh_from_db()
    assert product.price == Decimal("12.50")
    assert product.status == Product.Status.CLASSIFIED
    assert product.category_source == Product.CategorySource.PREDICTED, (
        "an untouched category stays predicted"
    )


def test_a_new_photo_in_the_admin_enqueues_once_and_resets_the_status(
    admin_client, make_product, make_upload, category, record_prediction, django_capture_on_commit_callbacks
):
    product = record_prediction(make_product(sku="P-2"), suggested=category, confidence=0.99)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            change_url(product),
            product_form(name=product.name, sku="P-2", image=make_upload("new.webp", image_format="WEBP")),
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    announced = [callback.keywords.get("product_ids") for callback in callbacks]
    assert [product_ids for product_ids in announced if product_ids] == [[product.pk]]
    product.refresh_from_db()
    assert product.status == Product.Status.PENDING
    assert product.image.name.endswith(".webp")


def test_choosing_a_category_in_the_admin_marks_it_set_by_a_person(
    admin_client, admin_user, make_product, category, other_category, record_prediction
):
    product = record_prediction(make_product(sku="P-3"), suggested=category, confidence=0.99)

    admin_client.post(
        change_url(product), product_form(name=product.name, sku="P-3", category=str(other_category.pk))
    )

    product.refresh_from_db()
    assert product.category == other_category
    assert product.category_source == Product.CategorySource.PERSON
    assert product.reviewed_by == admin_user


def test_clearing_the_category_in_the_admin_is_a_persons_no_category(
    admin_client, admin_user, make_product, category, record_prediction
):
    product = record_prediction(make_product(sku="P-4"), suggested=category, confidence=0.99)

    response = admin_client.post(change_url(product), product_form(name=product.name, sku="P-4", category=""))

    assert response.status_code == 302, response.content.decode()[:2000]
    product.refresh_from_db()
    assert (product.category, product.category_source) == (None, Product.CategorySource.PERSON)
    assert product.reviewed_by == admin_user
    page = admin_client.get(change_url(product)).content.decode()
    assert "Set by a person" in page


def test_retired_categories_are_not_offered_for_new_products(admin_client, category):
    Category.objects.create(name="Sandal", slug="sandal", is_active=False)

    page = admin_client.get(ADD_URL).content.decode()

    assert ">Shirt</option>" in page
    assert ">Sandal</option>" not in page


def test_product_list_shows_thumbnail_confidence_and_filters_by_status(
    admin_client, make_product, category, record_prediction
):
    classified = record_prediction(make_product(name="Oxford shirt"), suggested=category, confidence=0.964)
    make_product(name="Chino trousers")

    page = admin_client.get(LIST_URL).content.decode()
    assert f'<img src="/media/{classified.image.name}"' in page
    assert "96.4%" in page

    filtered = admin_client.get(LIST_URL, {"status__exact": "pending"}).content.decode()
    assert "Chino trousers" in filtered and "Oxford shirt" not in filtered

    found = admin_client.get(LIST_URL, {"q": "oxford"}).content.decode()
    assert "Oxford shirt" in found and "Chino trousers" not in found


def test_classify_again_action_requeues_the_selected_products(
    admin_client, make_product, django_capture_on_commit_callbacks
):
    product = make_product()
    Product.objects.filter(pk=product.pk).update(status=Product.Status.FAILED, classification_error="boom")

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            LIST_URL, {"action": "classify_again", "_selected_action": [str(product.pk)]}, follow=True
        )

    assert "1 product queued for classification." in response.content.decode()
    assert len(callbacks) == 1
    product.refresh_from_db()
    assert product.status == Product.Status.PENDING


def test_category_list_counts_products(admin_client, make_product, category):
    make_product(category=category)
    make_product(category=category)

    page = admin_client.get("/admin/catalog/category/").content.decode()

    assert f'?category__id__exact={category.pk}">2</a>' in page


def test_category_add_form_fills_the_slug_from_the_name(admin_client):
    page = admin_client.get("/admin/catalog/category/add/").content.decode()
    assert "prepopulated" in page and 'name="slug"' in page

    admin_client.post(
        "/admin/catalog/category/add/", {"name": "Ankle boot", "slug": "ankle-boot", "is_active": "on"}
    )

    assert Category.objects.get().slug == "ankle-boot"


def test_change_page_of_a_product_not_yet_classified_shows_no_made_up_values(admin_client, make_product):
    page = admin_client.get(change_url(make_product())).content.decode()

    assert "Pending" in page
    assert "None" not in page
