"""What staff tools do through the API: upload products, correct categories, re-run classification."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Category, Product
from classifier.models import ModelVersion
from tests.catalog.bad_files import BAD_FILES, BadFile

pytestmark = pytest.mark.django_db

PRODUCTS_URL = reverse("catalog-api:product-list")
# A few of the validator's cases, enough to show the API reports its refusals under "image".
BAD_PHOTO_CASES = {
    "empty",
    "truncated JPEG",
    "PNG bomb over our limit",
    "plain text named .jpg",
    "PNG named .jpg",
}
BAD_PHOTOS = [bad for bad in BAD_FILES if bad.case in BAD_PHOTO_CASES]


def classification_url(product: Product) -> str:
    return reverse("catalog-api:product-classification", kwargs={"id_or_slug": product.pk})


def reclassify_url(product: Product) -> str:
    return reverse("catalog-api:product-reclassify", kwargs={"id_or_slug": product.pk})


@pytest.fixture
def new_product(make_upload):
    """new_product(**changes) -> a valid multipart body for a new product."""

    def body(**changes) -> dict:
        return {
            "name": "Wool coat",
            "sku": "COAT-1",
            "price": "120.00",
            "image": make_upload("coat.jpg"),
        } | changes

    return body


def test_staff_creates_a_product_with_its_photo_and_gets_where_to_poll(
    staff_client, staff_user, new_product, category, stored_files, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            PRODUCTS_URL, new_product(category=category.slug, description="Warm."), format="multipart"
        )

    assert response.status_code == 201, response.content
    body = response.json()
    product = Product.objects.get()
    assert body["id"] == product.pk and body["status"] == "pending"
    assert body["classification_url"] == f"http://testserver{classification_url(product)}"
    assert response["Location"] == f"http://testserver/api/v1/products/{product.pk}/"
    assert body["category"] == {"slug": "shirt", "name": "Shirt"} and body["price"] == "120.00"
    assert (product.name, product.sku, product.description) == ("Wool coat", "COAT-1", "Warm.")
    assert product.created_by == staff_user and product.is_published
    assert product.category_source == Product.CategorySource.PERSON
    assert [path.name for path in stored_files()] == [product.image.name.rsplit("/", 1)[1]]
    # Classification is queued once, after the row is committed.
    assert [pk for callback in callbacks for pk in callback.keywords["product_ids"]] == [product.pk]

    poll = staff_client.get(body["classification_url"])
    assert poll.status_code == 200 and poll.json()["status"] == "pending"


def test_a_multipart_product_sent_without_is_published_is_published(staff_client, new_product):
    response = staff_client.post(PRODUCTS_URL, new_product(), format="multipart")

    assert response.status_code == 201
    assert Product.objects.get().is_published is True


def test_a_product_created_unpublished_stays_off_the_storefront(staff_client, anonymous_client, new_product):
    created = staff_client.post(PRODUCTS_URL, new_product(is_published="false"), format="multipart").json()

    assert anonymous_client.get(PRODUCTS_URL).json()["count"] == 0
    assert anonymous_client.get(f"{PRODUCTS_URL}{created['id']}/").status_code == 404
    assert staff_client.get(f"{PRODUCTS_URL}{created['id']}/").status_code == 200


LEFT_OUT = object()
BAD_REQUESTS = [
    *(
        pytest.param("multipart", {"image": bad}, "image", bad.message, id=f"photo: {bad.case}")
        for bad in BAD_PHOTOS
    ),
    pytest.param("multipart", {"price": "-1.00"}, "price", "greater than or equal to 0", id="negative price"),
    pytest.param("multipart", {"price": "cheap"}, "price", "valid number", id="price not a number"),
    pytest.param(
        "multipart",
        {"category": "hats"},
        "category",
        "No active category has the slug hats",
        id="unknown category",
    ),
    pytest.param(
        "multipart",
        {"category": "retired"},
        "category",
        "No active category has the slug retired",
        id="retired category",
    ),
    pytest.param(
        "multipart",
        {"category": "sh\x00irt"},
        "category",
        "No active category has the slug sh\u2400irt",
        id="category with a NUL byte",
    ),
    pytest.param("multipart", {"name": ""}, "name", "may not be blank", id="blank name"),
    pytest.param("multipart", {"sku": "S" * 65}, "sku", "no more than 64", id="SKU too long"),
    pytest.param("multipart", {"image": LEFT_OUT}, "image", "No file was submitted", id="no photo"),
    pytest.param("json", {"image": "photo.jpg"}, "image", "not a file", id="JSON body with a photo name"),
    pytest.param("raw", '{"name": "Wool coat", "sku": ', "detail", "JSON parse error", id="malformed JSON"),
]


@pytest.mark.parametrize(("encoding", "changes", "field", "message"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_stored(
    staff_client, new_product, stored_files, encoding, changes, field, message
):
    Category.objects.create(name="Retired", slug="retired", is_active=False)
    if encoding == "multipart":
        body = new_product()
        for key, value in changes.items():
            if value is LEFT_OUT:
                del body[key]
            elif isinstance(value, BadFile):
                body[key] = SimpleUploadedFile(value.name, value.content, content_type="image/jpeg")
            else:
                body[key] = value
        response = staff_client.post(PRODUCTS_URL, body, format="multipart")
    elif encoding == "json":
        body = {"name": "Wool coat", "sku": "COAT-1", "price": "120.00"} | changes
        response = staff_client.post(PRODUCTS_URL, body, format="json")
    else:
        response = staff_client.generic("POST", PRODUCTS_URL, changes, content_type="application/json")

    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert Product.objects.count() == 0
    assert stored_files() == []


def test_an_oversize_photo_is_refused_and_not_stored(
    staff_client, new_product, make_upload, stored_files, settings
):
    settings.VITRINE_MAX_UPLOAD_BYTES = 2_000
    photo = make_upload("big.jpg", size=(64, 64), noise=True)
    assert photo.size > 2_000

    response = staff_client.post(PRODUCTS_URL, new_product(image=photo), format="multipart")

    assert response.status_code == 400
    assert "the limit is 2.0 KB" in response.json()["image"][0]
    assert Product.objects.count() == 0 and stored_files() == []


def test_a_duplicate_sku_is_refused_and_stores_nothing_more(
    staff_client, new_product, make_product, stored_files
):
    existing = make_product(sku="COAT-1")
    files_before = stored_files()

    response = staff_client.post(PRODUCTS_URL, new_product(sku="COAT-1"), format="multipart")

    assert response.status_code == 400
    assert response.json() == {"sku": ["A product with this SKU already exists."]}
    assert list(Product.objects.all()) == [existing]
    assert stored_files() == files_before


def test_a_form_body_is_not_a_file_either(staff_client):
    response = staff_client.post(
        PRODUCTS_URL,
        "name=Coat&sku=C-1&price=1&image=coat.jpg",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 400 and "image" in response.json()
    assert Product.objects.count() == 0


def test_a_body_in_an_unknown_content_type_is_a_415(staff_client):
    response = staff_client.generic("POST", PRODUCTS_URL, "<product/>", content_type="application/xml")

    assert response.status_code == 415
    assert Product.objects.count() == 0


def test_classification_details_show_the_suggestion_confidence_model_and_status(
    staff_client, make_product, record_prediction, category, model_version
):
    product = record_prediction(
        make_product(), suggested=category, confidence=0.62, status=Product.Status.NEEDS_REVIEW, filed=False
    )

    response = staff_client.get(classification_url(product))

    assert response.status_code == 200
    assert response.json() == {
        "product_id": product.pk,
        "status": "needs_review",
        "status_changed_at": response.json()["status_changed_at"],
        "category": None,
        "category_source": "",
        "suggested_category": {"slug": "shirt", "name": "Shirt"},
        "confidence": 0.62,
        "review_reason": "low_confidence",
        "review_reason_text": "The model is not sure enough",
        "unfamiliarity": None,
        "model_version": {"id": model_version.pk, "name": "vitrine_cnn-test"},
        "error": "",
        "reviewed_at": None,
        "reviewed_by": None,
        "duplicate_of": None,
    }


def test_correcting_the_category_files_the_product_as_reviewed_by_that_person(
    staff_client, staff_user, make_product, record_prediction, category, other_category
):
    product = record_prediction(
        make_product(), suggested=category, confidence=0.62, status=Product.Status.NEEDS_REVIEW, filed=False
    )

    response = staff_client.patch(classification_url(product), {"category": "trouser"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["category"] == {"slug": "trouser", "name": "Trouser"}
    assert body["category_source"] == "person" and body["status"] == "classified"
    assert body["reviewed_by"] == "editor" and body["reviewed_at"] is not None
    assert body["suggested_category"] == {"slug": "shirt", "name": "Shirt"}
    product.refresh_from_db()
    assert product.category == other_category and product.reviewed_by == staff_user


def test_clearing_the_category_is_a_persons_no_category_that_no_prediction_undoes(
    staff_client, staff_user, make_product, record_prediction, category
):
    product = record_prediction(make_product(), suggested=category, confidence=0.97)

    response = staff_client.patch(classification_url(product), {"category": None}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["category"] is None and body["category_source"] == "person"
    assert body["reviewed_by"] == "editor"
    product.refresh_from_db()
    assert (product.category, product.category_source) == (None, Product.CategorySource.PERSON)


@pytest.mark.parametrize(
    ("body", "content_type", "field", "message"),
    [
        ({"category": "hats"}, "application/json", "category", "No active category has the slug hats"),
        ({"category": "retired"}, "application/json", "category", "No active category has the slug retired"),
        ({}, "application/json", "category", "This field is required."),
        ({"category": "a\x00b"}, "application/json", "category", "No active category has the slug a\u2400b"),
        ('{"category": ', "application/json", "detail", "JSON parse error"),
    ],
    ids=[
        "unknown category",
        "retired category",
        "no category",
        "NUL byte",
        "malformed JSON",
    ],
)
def test_a_bad_correction_is_a_400_and_changes_nothing(
    staff_client, make_product, category, body, content_type, field, message
):
    Category.objects.create(name="Retired", slug="retired", is_active=False)
    product = make_product(category=category)
    payload = body if isinstance(body, str) else json.dumps(body)

    response = staff_client.generic("PATCH", classification_url(product), payload, content_type=content_type)

    assert response.status_code == 400
    assert message in str(response.json()[field])
    product.refresh_from_db()
    assert product.category == category and product.reviewed_by is None


def test_reclassify_queues_the_photo_again_and_keeps_a_persons_category(
    staff_client, make_product, category, django_capture_on_commit_callbacks
):
    product = make_product(category=category)
    Product.objects.filter(pk=product.pk).update(
        status=Product.Status.FAILED, classification_error="model missing"
    )

    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(reclassify_url(product))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["error"] == ""
    assert body["category"] == {"slug": "shirt", "name": "Shirt"} and body["category_source"] == "person"
    assert [pk for callback in callbacks for pk in callback.keywords["product_ids"]] == [product.pk]


def test_staff_list_model_versions_with_their_metrics(staff_client, model_version):
    ModelVersion.objects.filter(pk=model_version.pk).update(metrics={"accuracy": 0.91, "macro_f1": 0.9})

    response = staff_client.get(reverse("classifier-api:model-version-list"))

    assert response.status_code == 200
    (listed,) = response.json()["results"]
    assert listed["name"] == "vitrine_cnn-test" and listed["is_active"] is True
    assert listed["metrics"] == {"accuracy": 0.91, "macro_f1": 0.9}
    assert listed["class_names"] == ["Shirt", "Trouser"] and listed["threshold"] == 0.9
