"""Writing products: create, edit, photo changes, a person's category and review decisions.

Every path that saves a product photo goes through here, so the catalog announces a new photo from one place
(catalog.signals.product_photos_changed), once per photo, only after the row is committed."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext, gettext_lazy, ngettext

from catalog.models import Category, Product
from catalog.photos import (
    photo_color_names,
    photo_files_delete,
    photo_files_delete_on_commit,
    photo_move_to_new_name,
    photo_store,
    photo_upload_hashes,
)
from catalog.selectors import category_by_name, products_needing_review
from catalog.services.classification import PREDICTION_FIELDS
from catalog.services.duplicates import DUPLICATE_FIELDS, product_duplicate_check_hash
from catalog.services.webhooks import product_events_record
from catalog.signals import product_photos_changed
from catalog.validators import validate_product_image

logger = logging.getLogger(__name__)

PRODUCT_EDITABLE_FIELDS = frozenset(
    {"name", "description", "price", "sku", "image", "category", "is_published"}
)
# Slugs are cut to this length before a "-N" suffix, so the result always fits the column.
PRODUCT_SLUG_BASE_LENGTH = Product._meta.get_field("slug").max_length - 10
# Products saved at once under one name each take the next suffix; this many tries is plenty.
SLUG_ATTEMPTS = 5
SKU_TAKEN = gettext_lazy("A product with this SKU already exists.")


def _announce_photos_changed(*, product_ids: list[int]) -> None:
    for receiver, outcome in product_photos_changed.send_robust(sender=Product, product_ids=product_ids):
        if isinstance(outcome, Exception):
            # The products stay pending; the classifier's sweep finds them.
            logger.warning("products %s: %s failed (%s)", product_ids, receiver.__qualname__, outcome)


def _announce_photos_changed_on_commit(*, product_ids: list[int]) -> None:
    # robust: a failure to announce never turns a saved product into an error page; the sweep finds it.
    transaction.on_commit(partial(_announce_photos_changed, product_ids=product_ids), robust=True)


def product_slug_unique(*, name: str) -> str:
    """slugify(name), or with -2, -3... appended when another product already uses it."""
    base = slugify(name)[:PRODUCT_SLUG_BASE_LENGTH].strip("-") or "product"
    taken = set(Product.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


@transaction.atomic
def product_create(
    *,
    name: str,
    sku: str,
    price: Decimal,
    image: File,
    description: str = "",
    category: Category | None = None,
    is_published: bool = True,
    created_by: AbstractBaseUser | None = None,
) -> Product:
    """Saves a product and its photo (as served: upright, without metadata) under a random name;
    classification is enqueued after commit.

    `image_sha256` is the hash of the uploaded bytes, not of the stored ones (README "Architecture").
    A category given here was chosen by a person and is never replaced by a prediction.
    Raises ValidationError for a bad photo or field (nothing is stored then).
    """
    image_sha256 = validate_product_image(image)
    now = timezone.now()
    product = Product(
        name=name,
        slug=product_slug_unique(name=name),
        description=description,
        price=price,
        sku=sku,
        image_sha256=image_sha256,
        is_published=is_published,
        status=Product.Status.PENDING,
        status_changed_at=now,
        created_by=created_by,
    )
    if category is not None:
        product.category = category
        product.category_source = Product.CategorySource.PERSON
        product.reviewed_at = now
        product.reviewed_by = created_by
    # The photo was checked above and is stored only once every other field is valid.
    product.full_clean(exclude=["image"])
    product.colors = photo_color_names(upload=image)
    product.photo_hash, mirror_hash = photo_upload_hashes(upload=image)
    product.image = photo_store(owner=product, upload=image)
    try:
        _save_unique(product, force_insert=True)
    except Exception:
        # The file is written before the INSERT; a failed INSERT must not leave it behind.
        photo_files_delete(names=[product.image.name])
        raise
    product_duplicate_check_hash(product=product, mirror_hash=mirror_hash)
    _announce_photos_changed_on_commit(product_ids=[product.pk])
    return product


class ProductSkuTaken(ValidationError):
    """Another product took this SKU after the form or serializer found it free."""


def _save_unique(product: Product, **save_options: object) -> None:
    """Saves the product; when another transaction took its SKU or slug since full_clean() checked them,
    the SKU is a ValidationError naming the field and the slug moves to the next free suffix."""
    for _attempt in range(SLUG_ATTEMPTS):
        try:
            # A savepoint: the failed statement is undone and the caller's transaction goes on.
            with transaction.atomic():
                product.save(**save_options)
            return
        except IntegrityError:
            # The other transaction has committed by now (PostgreSQL waited for it): its row is visible.
            others = Product.objects.exclude(pk=product.pk) if product.pk else Product.objects.all()
            if others.filter(sku=product.sku).exists():
                raise ProductSkuTaken({"sku": SKU_TAKEN}, code="unique") from None
            if others.filter(slug=product.slug).exists():
                product.slug = product_slug_unique(name=product.name)
                continue
            raise
    raise ValidationError(
        {"slug": gettext("No free slug for %(product)s; try again.") % {"product": product.name}},
        code="unique",
    )


def _person_sets_category(
    *, product: Product, category: Category | None, person: AbstractBaseUser | None
) -> list[str]:
    """A person's decision, "no category" (None) included: no prediction files the product after it."""
    now = timezone.now()
    product.category = category
    product.category_source = Product.CategorySource.PERSON
    product.reviewed_at = now
    product.reviewed_by = person
    changed = ["category", "category_source", "reviewed_at", "reviewed_by"]
    # A person deciding answers the review the product was waiting for.
    if product.status == Product.Status.NEEDS_REVIEW:
        product.status = Product.Status.CLASSIFIED
        product.status_changed_at = now
        product.review_reason = Product.ReviewReason.NONE
        changed += ["status", "status_changed_at", "review_reason"]
    return changed


def _photo_replaced(*, product: Product, image_sha256: str) -> list[str]:
    product.image_sha256 = image_sha256
    product.status = Product.Status.PENDING
    product.status_changed_at = timezone.now()
    product.classification_error = ""
    product.classification_attempts = 0
    product.suggested_category = None
    product.confidence = None
    product.unfamiliarity = None
    product.review_reason = Product.ReviewReason.NONE
    product.model_version = None
    product.classified_sha256 = ""
    # A flag said the old photo looked like another product's; the new photo is checked afresh.
    product.duplicate_of = None
    product.duplicate_kind = Product.DuplicateKind.NONE
    product.duplicate_score = None
    changed = [
        "image",
        "image_sha256",
        "colors",
        "photo_hash",
        *DUPLICATE_FIELDS,
        "status",
        "status_changed_at",
        "classification_error",
        "classification_attempts",
        *PREDICTION_FIELDS,
    ]
    # A category predicted from the old photo says nothing about the new one; a person's choice stays.
    if product.category_source == Product.CategorySource.PREDICTED:
        product.category = None
        product.category_source = Product.CategorySource.NONE
        changed += ["category", "category_source"]
    return changed


def _photos_to_new_names(product: Product) -> None:
    """Unpublishing moves the photos to new random names: URLs seen while it was public stop working."""
    product.image = photo_move_to_new_name(owner=product)
    for extra in product.images.all():
        extra.image = photo_move_to_new_name(owner=extra)
        extra.save(update_fields=["image"])


@transaction.atomic
def product_update(*, product: Product, updated_by: AbstractBaseUser | None = None, **fields) -> Product:
    """Applies `fields` (name, description, price, sku, image, category, is_published) to the saved product.

    Only a photo with different bytes re-runs classification (enqueued after commit) and clears the old
    prediction; the old photo's file is removed once the change commits. Unpublishing moves the photos to new
    names, so their public URLs stop working. A category given here is a person's choice and is never
    replaced by a prediction.
    Writes only the changed columns, so a prediction saved meanwhile by a worker is not overwritten.
    """
    unknown = sorted(set(fields) - PRODUCT_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(
            f"product_update() cannot change {', '.join(unknown)}; "
            f"editable: {', '.join(sorted(PRODUCT_EDITABLE_FIELDS))}"
        )
    product = Product.objects.select_for_update().get(pk=product.pk)
    previous_category_id = product.category_id
    changed: list[str] = []
    # The stored name of the photo a new one replaces; None while the photo stays.
    replaced_photo: str | None = None
    for field in ("name", "description", "price", "sku", "is_published"):
        if field in fields and getattr(product, field) != fields[field]:
            setattr(product, field, fields[field])
            changed.append(field)
    if "category" in fields:
        changed += _person_sets_category(product=product, category=fields["category"], person=updated_by)
    if "image" in fields:
        image_sha256 = validate_product_image(fields["image"])
        if image_sha256 != product.image_sha256:
            changed += _photo_replaced(product=product, image_sha256=image_sha256)
            replaced_photo = product.image.name
    if not changed:
        return product
    product.full_clean(exclude=["image"])
    mirror_hash = None
    if replaced_photo is not None:
        product.colors = photo_color_names(upload=fields["image"])
        product.photo_hash, mirror_hash = photo_upload_hashes(upload=fields["image"])
        product.image = photo_store(owner=product, upload=fields["image"])
    elif "is_published" in changed and not product.is_published:
        _photos_to_new_names(product)
        changed.append("image")
    try:
        _save_unique(product, update_fields=[*dict.fromkeys(changed), "updated_at"])
    except Exception:
        if replaced_photo is not None:
            photo_files_delete(names=[product.image.name])
        raise
    if replaced_photo is not None:
        photo_files_delete_on_commit(names=[replaced_photo])
        product_duplicate_check_hash(product=product, mirror_hash=mirror_hash)
        _announce_photos_changed_on_commit(product_ids=[product.pk])
    product_events_record(product=product, previous_category_id=previous_category_id, classified=False)
    return product


@transaction.atomic
def products_classify_again(*, products: Iterable[Product]) -> int:
    """Puts the products back in the classification queue (after a failure, or for a newly activated model).

    Person-set categories stay; returns how many products were queued.
    """
    product_ids = list(
        Product.objects.filter(pk__in=[product.pk for product in products]).values_list("pk", flat=True)
    )
    now = timezone.now()
    Product.objects.filter(pk__in=product_ids).update(
        status=Product.Status.PENDING,
        status_changed_at=now,
        classification_error="",
        classification_attempts=0,
        # Forgetting which photo was classified makes the worker classify it again instead of skipping it.
        classified_sha256="",
        updated_at=now,
    )
    if product_ids:
        _announce_photos_changed_on_commit(product_ids=product_ids)
    return len(product_ids)


class ReviewError(ValueError):
    """A review decision that cannot be applied (no suggestion, a retired category)."""


def product_file_under(
    *, product: Product, category: Category, reviewed_by: AbstractBaseUser | None
) -> Product:
    """A person files the product under `category` (from the review queue); it becomes training data.

    Raises ReviewError for a retired category.
    """
    if not category.is_active:
        raise ReviewError(
            gettext("%(category)s is retired; choose an active category for %(product)s")
            % {"category": category.name, "product": product.name}
        )
    return product_update(product=product, updated_by=reviewed_by, category=category)


def product_accept_suggestion(*, product: Product, reviewed_by: AbstractBaseUser | None) -> Product:
    """Files the product under the category the model suggested, as a person's reviewed choice."""
    if product.suggested_category is None:
        raise ReviewError(
            gettext("%(product)s has no suggested category to accept") % {"product": product.name}
        )
    return product_file_under(product=product, category=product.suggested_category, reviewed_by=reviewed_by)


def products_accept_suggestions(
    *, products: Iterable[Product], reviewed_by: AbstractBaseUser | None
) -> tuple[int, list[str]]:
    """Accepts each product's suggestion; returns how many were filed and why the others were not."""
    accepted, problems = 0, []
    for product in products:
        try:
            with transaction.atomic():
                product_accept_suggestion(product=product, reviewed_by=reviewed_by)
        except ReviewError as error:
            problems.append(str(error))
        else:
            accepted += 1
    return accepted, problems


@transaction.atomic
def products_file_under_new_category(
    *, name: str, product_ids: list[int], reviewed_by: AbstractBaseUser | None
) -> tuple[Category, list[Product]]:
    """Creates the category `name` and files the products under it as a person's review decision (from the
    review queue's "new categories to consider"); the labels become training data like any review.

    All or nothing: raises ReviewError, creating nothing, for a blank name, a name a category already has,
    or a product that no longer waits for review (decided meanwhile, or deleted).
    """
    name = " ".join(name.split())
    name_length = Category._meta.get_field("name").max_length
    if not slugify(name):
        raise ReviewError(gettext("Name the new category (letters or digits)."))
    if len(name) > name_length:
        raise ReviewError(
            gettext("A category name has at most %(count)d characters.") % {"count": name_length}
        )
    if category_by_name(name=name) is not None:
        raise ReviewError(
            gettext("A category named %(name)s already exists; choose another name.") % {"name": name}
        )
    waiting = list(
        products_needing_review().select_for_update(of=("self",)).filter(pk__in=product_ids).order_by("pk")
    )
    if not product_ids:
        raise ReviewError(gettext("No photos were given for the new category; nothing was created."))
    gone = len(set(product_ids)) - len(waiting)
    if gone:
        raise ReviewError(
            ngettext(
                "%(count)d of these photos no longer waits for review; nothing was created.",
                "%(count)d of these photos no longer wait for review; nothing was created.",
                gone,
            )
            % {"count": gone}
        )
    try:
        with transaction.atomic():
            category = Category.objects.create(name=name, slug=slugify(name))
    except IntegrityError as error:
        # Another person created it between the check above and now.
        raise ReviewError(
            gettext("A category named %(name)s already exists; choose another name.") % {"name": name}
        ) from error
    filed = [
        product_file_under(product=product, category=category, reviewed_by=reviewed_by) for product in waiting
    ]
    return category, filed


@dataclass(frozen=True)
class ColorsFilled:
    named: int
    # One line per product whose photo could not be read: its id and why.
    problems: list[str]


def products_colors_fill(*, every_product: bool = False) -> ColorsFilled:
    """Names the dominant colours of products without any (or of every product), from their stored photos.

    Writes only the colours column, so an edit or a classification saved meanwhile is kept.
    """
    products = Product.objects.all() if every_product else Product.objects.filter(colors=[])
    named, problems = 0, []
    for product in products.only("pk", "image").iterator():
        try:
            with product.image.open("rb") as stored:
                colors = photo_color_names(upload=stored)
        except (OSError, ValueError) as error:  # a missing file, or one Pillow cannot read
            problems.append(f"product {product.pk}: cannot read its photo {product.image.name} ({error})")
            continue
        Product.objects.filter(pk=product.pk).update(colors=colors)
        named += 1
    return ColorsFilled(named=named, problems=problems)
