import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from catalog.models import Category, Product
from catalog.photos import photo_without_metadata
from catalog.selectors import products_needing_review
from catalog.services.categories import CategoryLabelError, category_for_label
from catalog.services.products import product_create, product_update, products_classify_again
from tests.catalog.bad_files import BAD_FILES

pytestmark = pytest.mark.django_db


def enqueued_product_ids(callbacks) -> list[int]:
    """The products committing would announce to the classifier (catalog.signals.product_photos_changed)."""
    return [pk for callback in callbacks for pk in callback.keywords.get("product_ids", [])]


def test_create_stores_the_photo_under_a_random_name_with_its_hash_and_enqueues_it_once(
    make_upload, media_root: Path, django_capture_on_commit_callbacks
):
    upload = make_upload("Summer Dress FINAL v2.jpg", noise=True)
    content = upload.read()
    upload.seek(0)

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_create(name="Summer dress", sku="DR-1", price=Decimal("49.00"), image=upload)

    product.refresh_from_db()
    assert product.status == Product.Status.PENDING
    assert product.image_sha256 == hashlib.sha256(content).hexdigest()
    assert "Summer" not in product.image.name and "FINAL" not in product.image.name
    assert product.image.name.endswith(".jpg")
    assert (media_root / product.image.name).read_bytes() == photo_without_metadata(content)
    assert product.slug == "summer-dress"
    assert product.category is None and product.category_source == Product.CategorySource.NONE
    assert enqueued_product_ids(callbacks) == [product.pk]


def test_two_uploads_with_the_same_client_name_are_stored_apart(make_product, make_upload):
    first = make_product(image=make_upload("photo.jpg", colour=(255, 0, 0)))
    second = make_product(image=make_upload("photo.jpg", colour=(0, 0, 255)))

    assert first.image.name != second.image.name
    assert first.image_sha256 != second.image_sha256


def test_category_chosen_at_creation_is_recorded_as_a_persons_choice(make_product, category, admin_user):
    product = make_product(category=category, created_by=admin_user)

    assert product.category == category
    assert product.category_source == Product.CategorySource.PERSON
    assert product.reviewed_by == admin_user and product.reviewed_at is not None
    assert product.created_by == admin_user


@pytest.mark.parametrize("bad", BAD_FILES[:6], ids=lambda bad: bad.case)
def test_create_with_a_bad_photo_saves_and_stores_nothing(
    bad, make_upload, stored_files, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ValidationError):
        product_create(
            name="Shirt", sku="S-1", price=Decimal(1), image=make_upload(bad.name, content=bad.content)
        )

    assert Product.objects.count() == 0
    assert stored_files() == []
    assert callbacks == []


def test_create_with_a_taken_sku_saves_and_stores_nothing_more(make_product, make_upload, stored_files):
    make_product(sku="DUP-1")

    with pytest.raises(ValidationError, match="SKU already exists"):
        make_product(sku="DUP-1", image=make_upload("another.jpg", colour=(1, 2, 3)))

    assert Product.objects.count() == 1
    assert len(stored_files()) == 1


def test_slugs_are_unique_and_readable(make_product):
    slugs = [make_product(name="Blue Shirt").slug for _ in range(3)]
    assert slugs == ["blue-shirt", "blue-shirt-2", "blue-shirt-3"]
    assert make_product(name="Blue shirts").slug == "blue-shirts"
    assert make_product(name="???").slug == "product"
    assert make_product(name="Été — robe d’été").slug == "ete-robe-dete"


def test_editing_name_price_and_description_enqueues_nothing_and_keeps_the_prediction(
    make_product, category, record_prediction, django_capture_on_commit_callbacks
):
    product = record_prediction(make_product(), suggested=category, confidence=0.97)

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(
            product=product,
            name="Blue shirt (new)",
            price=Decimal("9.99"),
            description="Soft",
            is_published=False,
        )

    # Nothing is sent to the classifier; unpublishing only removes the photo's old, public file.
    assert [callback.func.__name__ for callback in callbacks] == ["photo_files_delete"]
    product.refresh_from_db()
    assert (product.name, product.price, product.description) == ("Blue shirt (new)", Decimal("9.99"), "Soft")
    assert product.is_published is False
    assert product.status == Product.Status.CLASSIFIED
    assert (product.category, product.confidence) == (category, 0.97)
    assert product.slug == "blue-shirt", "a product's address stays the same when it is renamed"


def test_a_new_photo_clears_the_old_prediction_and_is_enqueued(
    make_product, make_upload, category, record_prediction, media_root, django_capture_on_commit_callbacks
):
    product = record_prediction(make_product(), suggested=category, confidence=0.97)
    old_path = product.image.name
    new_upload = make_upload("new.png", image_format="PNG", colour=(0, 200, 0))
    new_content = new_upload.read()
    new_upload.seek(0)

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, image=new_upload)

    assert enqueued_product_ids(callbacks) == [product.pk]
    product.refresh_from_db()
    assert product.image.name != old_path and product.image.name.endswith(".png")
    assert (media_root / product.image.name).read_bytes() == photo_without_metadata(new_content)
    assert product.image_sha256 == hashlib.sha256(new_content).hexdigest()
    assert product.status == Product.Status.PENDING
    assert product.suggested_category is None and product.confidence is None and product.model_version is None
    assert product.category is None, "a category predicted from the old photo must not stick to the new one"
    assert product.category_source == Product.CategorySource.NONE


def test_a_new_photo_keeps_a_persons_category(
    make_product, make_upload, category, other_category, record_prediction, django_capture_on_commit_callbacks
):
    product = make_product(category=category)
    record_prediction(product, suggested=other_category, confidence=0.99, filed=False)

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, image=make_upload("new.jpg", colour=(9, 9, 9)))

    assert enqueued_product_ids(callbacks) == [product.pk]
    product.refresh_from_db()
    assert product.category == category
    assert product.category_source == Product.CategorySource.PERSON


def test_uploading_the_same_photo_again_stores_and_enqueues_nothing(
    make_product, make_upload, stored_files, django_capture_on_commit_callbacks
):
    product = make_product(image=make_upload("a.jpg", colour=(10, 20, 30)))
    path = product.image.name

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, image=make_upload("same photo.jpg", colour=(10, 20, 30)))

    assert callbacks == []
    assert product.image.name == path
    assert len(stored_files()) == 1


def test_a_bad_new_photo_is_refused_and_the_old_one_kept(make_product, make_upload, stored_files):
    product = make_product()
    path = product.image.name

    with pytest.raises(ValidationError, match="not an image"):
        product_update(product=product, image=make_upload("new.jpg", content=b"hello"))

    product.refresh_from_db()
    assert product.image.name == path
    assert len(stored_files()) == 1


def test_a_person_setting_the_category_is_recorded_and_ends_the_review(
    make_product, category, other_category, record_prediction, admin_user, django_capture_on_commit_callbacks
):
    product = record_prediction(
        make_product(), suggested=category, confidence=0.41, status=Product.Status.NEEDS_REVIEW, filed=False
    )
    assert list(products_needing_review()) == [product]

    with django_capture_on_commit_callbacks() as callbacks:
        product = product_update(product=product, category=other_category, updated_by=admin_user)

    assert callbacks == []
    product.refresh_from_db()
    assert product.category == other_category
    assert product.category_source == Product.CategorySource.PERSON
    assert product.reviewed_by == admin_user and product.reviewed_at is not None
    assert product.status == Product.Status.CLASSIFIED
    assert product.suggested_category == category, "the model's suggestion stays visible beside the choice"
    assert list(products_needing_review()) == []


def test_an_edit_does_not_overwrite_a_prediction_saved_meanwhile(make_product, category, model_version):
    product = make_product()
    stale_copy = Product.objects.get(pk=product.pk)
    # A worker files the product while an admin has the old row open.
    Product.objects.filter(pk=product.pk).update(
        suggested_category=category,
        category=category,
        category_source=Product.CategorySource.PREDICTED,
        confidence=0.98,
        model_version=model_version,
        status=Product.Status.CLASSIFIED,
    )

    product_update(product=stale_copy, price=Decimal("5.00"))

    product.refresh_from_db()
    assert product.price == Decimal("5.00")
    assert (product.category, product.confidence, product.status) == (
        category,
        0.98,
        Product.Status.CLASSIFIED,
    )


def test_update_refuses_fields_that_are_not_a_persons_to_edit(make_product):
    with pytest.raises(TypeError, match="cannot change confidence, status"):
        product_update(product=make_product(), status="classified", confidence=1.0)


def test_update_to_a_taken_sku_is_refused(make_product):
    make_product(sku="TAKEN")
    product = make_product()

    with pytest.raises(ValidationError, match="SKU already exists"):
        product_update(product=product, sku="TAKEN")


def test_classify_again_requeues_failed_products_once_each(make_product, django_capture_on_commit_callbacks):
    failed, untouched = make_product(), make_product()
    Product.objects.update(status=Product.Status.FAILED, classification_error="broken data stream")

    with django_capture_on_commit_callbacks() as callbacks:
        count = products_classify_again(products=Product.objects.filter(pk=failed.pk))

    assert count == 1
    assert enqueued_product_ids(callbacks) == [failed.pk]
    failed.refresh_from_db()
    assert (failed.status, failed.classification_error) == (Product.Status.PENDING, "")
    untouched.refresh_from_db()
    assert untouched.status == Product.Status.FAILED


def test_category_for_label_creates_once_and_reuses(db):
    tshirt = category_for_label(label="T-shirt/top")
    assert (tshirt.name, tshirt.slug, tshirt.is_active) == ("T-shirt/top", "t-shirttop", True)
    assert category_for_label(label="T-shirt/top") == tshirt
    assert Category.objects.count() == 1


def test_category_for_label_reuses_a_category_a_person_made_with_another_slug(db):
    made_by_hand = Category.objects.create(name="Bag", slug="bags")
    assert category_for_label(label="Bag") == made_by_hand


def test_category_for_label_refuses_a_label_without_letters_or_digits(db):
    with pytest.raises(CategoryLabelError, match="no letters or digits"):
        category_for_label(label="???")


def test_a_person_clearing_the_category_is_their_decision_and_the_next_prediction_keeps_it(
    make_product, category, record_prediction, admin_user
):
    from catalog.selectors import products_reviewed_for_training
    from catalog.services.classification import product_file_from_prediction
    from classifier.models import ModelVersion

    product = record_prediction(make_product(), suggested=category, confidence=0.97)

    product = product_update(product=product, updated_by=admin_user, category=None)
    newer = ModelVersion.objects.create(
        name="newer", artifact_path="newer", model_sha256="1" * 64, architecture="vitrine_cnn"
    )
    refiled = product_file_from_prediction(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.99,
        model_version_id=newer.pk,
        threshold=0.5,
    )

    assert (refiled.category, refiled.category_source) == (None, Product.CategorySource.PERSON)
    assert refiled.status == Product.Status.CLASSIFIED and refiled.reviewed_by == admin_user
    assert product not in products_needing_review()
    assert product not in products_reviewed_for_training(), "a person's 'no category' is not training data"


def test_a_person_clearing_a_waiting_products_category_answers_its_review(
    make_product, category, record_prediction, admin_user
):
    product = record_prediction(
        make_product(), suggested=category, confidence=0.4, status=Product.Status.NEEDS_REVIEW, filed=False
    )
    assert product in products_needing_review()

    product = product_update(product=product, updated_by=admin_user, category=None)

    assert product.status == Product.Status.CLASSIFIED and product.review_reason == ""
    assert product not in products_needing_review()
