"""Possible duplicates by perceptual hash: found at upload, recorded once, shown in the admin and the API."""

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image, ImageOps

from catalog.models import Product
from catalog.photo_hash import hash_distances, photo_hashes
from catalog.services.duplicates import product_duplicate_record
from catalog.services.products import product_update
from tests.catalog.photo_copies import altered_copy, jpeg, product_photo, upload


def distance(first: Image.Image, second: Image.Image) -> int:
    """The bits that differ between `second` and the nearer of `first` and its mirror image."""
    (second_hash, _) = photo_hashes(second)
    return int(min(hash_distances(second_hash, np.array(photo_hashes(first)))))


@pytest.mark.parametrize(
    "change",
    [
        lambda image: Image.open(io.BytesIO(jpeg(image, quality=40))),
        lambda image: image.resize((200, 150)),
        lambda image: image.crop((12, 9, 388, 291)),
        ImageOps.mirror,
        altered_copy,
    ],
    ids=["re-encoded", "resized", "cropped", "mirrored", "all-at-once"],
)
def test_a_copy_of_a_photo_hashes_within_the_default_distance(settings, change) -> None:
    photo = product_photo(seed=1)
    assert distance(photo, change(photo)) <= settings.VITRINE_DUPLICATE_HASH_DISTANCE


def test_different_photos_hash_far_apart(settings) -> None:
    distances = [distance(product_photo(seed=1), product_photo(seed=seed)) for seed in range(2, 12)]
    assert min(distances) > settings.VITRINE_DUPLICATE_HASH_DISTANCE


def test_an_altered_copy_is_flagged_as_looking_like_the_first_product(make_product) -> None:
    original = make_product(name="Red dress", image=upload(product_photo(seed=1)))
    other = make_product(name="Blue hat", image=upload(product_photo(seed=2)))
    copy = make_product(name="Red dress again", image=upload(altered_copy(product_photo(seed=1))))

    copy.refresh_from_db()
    assert copy.duplicate_of == original
    assert copy.duplicate_kind == Product.DuplicateKind.HASH
    assert copy.duplicate_score <= 10
    # Nothing is refused: the copy is saved and waits for classification like any product.
    assert copy.status == Product.Status.PENDING
    for product in (original, other):
        product.refresh_from_db()
        assert product.duplicate_of is None


def test_the_hash_distance_is_a_setting(settings, make_product) -> None:
    settings.VITRINE_DUPLICATE_HASH_DISTANCE = 0
    make_product(name="Red dress", image=upload(product_photo(seed=1)))
    copy = make_product(name="Red dress again", image=upload(altered_copy(product_photo(seed=1))))
    copy.refresh_from_db()
    assert copy.duplicate_of is None


def test_the_first_flag_is_kept(make_product) -> None:
    first, second, third = (make_product(image=upload(product_photo(seed=seed))) for seed in (1, 2, 3))
    assert product_duplicate_record(
        product_id=third.pk, duplicate_of_id=first.pk, kind="embedding", score=0.95
    )
    assert not product_duplicate_record(product_id=third.pk, duplicate_of_id=second.pk, kind="hash", score=2)
    third.refresh_from_db()
    assert (third.duplicate_of, third.duplicate_kind, third.duplicate_score) == (first, "embedding", 0.95)


@pytest.mark.parametrize("kind, other", [("checksum", "first"), ("hash", "self")])
def test_a_bad_flag_is_refused_by_name(make_product, kind, other) -> None:
    first, second = (make_product(image=upload(product_photo(seed=seed))) for seed in (1, 2))
    with pytest.raises(ValueError, match="kind|itself"):
        product_duplicate_record(
            product_id=second.pk,
            duplicate_of_id=(first if other == "first" else second).pk,
            kind=kind,
            score=1,
        )


def test_a_new_photo_clears_the_flag_and_is_checked_again(make_product) -> None:
    original = make_product(image=upload(product_photo(seed=1)))
    copy = make_product(image=upload(product_photo(seed=1)))
    copy.refresh_from_db()
    assert copy.duplicate_of == original

    product_update(product=copy, image=upload(product_photo(seed=5)))
    copy.refresh_from_db()
    assert (copy.duplicate_of, copy.duplicate_kind, copy.duplicate_score) == (None, "", None)

    product_update(product=copy, image=upload(altered_copy(product_photo(seed=1))))
    copy.refresh_from_db()
    assert copy.duplicate_of == original


def test_the_admin_shows_the_flag_with_a_link_and_both_photos(admin_client, make_product) -> None:
    original = make_product(name="Red dress", image=upload(product_photo(seed=1)))
    copy = make_product(name="Red dress again", image=upload(altered_copy(product_photo(seed=1))))
    copy.refresh_from_db()

    page = admin_client.get(reverse("admin:catalog_product_change", args=[copy.pk])).content.decode()
    assert "Looks like" in page
    assert f'href="{reverse("admin:catalog_product_change", args=[original.pk])}"' in page
    assert copy.image.url in page
    assert original.image.url in page
    original_page = admin_client.get(reverse("admin:catalog_product_change", args=[original.pk]))
    assert "Looks like" not in original_page.content.decode()

    flagged = admin_client.get(reverse("admin:catalog_product_changelist"), {"duplicate": "yes"})
    assert [row.pk for row in flagged.context["cl"].result_list] == [copy.pk]
    unflagged = admin_client.get(reverse("admin:catalog_product_changelist"), {"duplicate": "no"})
    assert [row.pk for row in unflagged.context["cl"].result_list] == [original.pk]


def test_the_api_gives_staff_the_flag_and_the_storefront_nothing(admin_client, client, make_product) -> None:
    original = make_product(name="Red dress", image=upload(product_photo(seed=1)))
    copy = make_product(name="Red dress again", image=upload(altered_copy(product_photo(seed=1))))

    def classification(product: Product) -> dict:
        url = reverse("catalog-api:product-classification", kwargs={"id_or_slug": product.pk})
        return admin_client.get(url).json()

    flag = classification(copy)["duplicate_of"]
    assert flag["id"] == original.pk
    assert flag["slug"] == original.slug
    assert flag["kind"] == "hash"
    assert 0 <= flag["score"] <= 10
    assert classification(original)["duplicate_of"] is None
    public = client.get(reverse("catalog-api:product-detail", kwargs={"id_or_slug": copy.pk})).json()
    assert "duplicate_of" not in public


def test_fill_photo_hashes_hashes_older_products_and_flags_copies(make_product, capsys) -> None:
    original = make_product(image=upload(product_photo(seed=1)))
    copy = make_product(image=upload(altered_copy(product_photo(seed=1))))
    missing = make_product(image=upload(product_photo(seed=2)))
    Product.objects.update(photo_hash=None, duplicate_of=None, duplicate_kind="", duplicate_score=None)
    missing.image.storage.delete(missing.image.name)

    call_command("fill_photo_hashes")

    assert "photos hashed for 2 products, 1 flagged" in capsys.readouterr().out
    copy.refresh_from_db()
    assert copy.duplicate_of == original
    assert Product.objects.filter(photo_hash__isnull=True).get() == missing
