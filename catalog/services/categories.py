"""Writing categories: the category a model's class name files into, merging, retiring, reactivating."""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext

from catalog.models import Category, Product
from catalog.selectors import category_by_name, category_merged_target
from catalog.services.webhooks import product_events_record


class CategoryLabelError(ValueError):
    """A model class name that cannot become a category."""


def category_for_label(*, label: str) -> Category:
    """The category a model class name files products under, created (active) on first use."""
    name = " ".join(label.split())
    if not slugify(name):
        raise CategoryLabelError(
            f"class name {label!r} has no letters or digits to make a category slug from"
        )
    existing = category_by_name(name=name)
    if existing is not None:
        return existing
    category, _ = Category.objects.get_or_create(slug=slugify(name), defaults={"name": name})
    return category


class CategoryMergeError(ValueError):
    """Categories that cannot be merged as asked."""


def category_for_prediction(*, label: str) -> Category:
    """The category a model class name files products under now: a merged category's label leads to the
    category it was merged into."""
    return category_merged_target(category=category_for_label(label=label))


@transaction.atomic
def categories_merge(*, into: Category, merged: Iterable[Category]) -> int:
    """Moves every product (and every suggestion) of `merged` to `into` and retires the merged categories.

    A model class named after a merged category files into `into` from then on. Returns the products moved.
    """
    into = Category.objects.select_for_update().get(pk=into.pk)
    if not into.is_active:
        raise CategoryMergeError(
            gettext("%(category)s is retired; reactivate it before merging into it") % {"category": into.name}
        )
    merged_ids = sorted({category.pk for category in merged} - {into.pk})
    if not merged_ids:
        raise CategoryMergeError(
            gettext("Choose at least one category besides %(category)s to merge into it.")
            % {"category": into.name}
        )
    list(Category.objects.select_for_update().filter(pk__in=merged_ids))
    now = timezone.now()
    previous = dict(Product.objects.filter(category_id__in=merged_ids).values_list("pk", "category_id"))
    moved = Product.objects.filter(category_id__in=merged_ids).update(category=into, updated_at=now)
    for product in Product.objects.filter(pk__in=previous).select_related("category"):
        product_events_record(product=product, previous_category_id=previous[product.pk], classified=False)
    Product.objects.filter(suggested_category_id__in=merged_ids).update(
        suggested_category=into, updated_at=now
    )
    # Earlier merges into a category merged now lead straight to the new target.
    Category.objects.filter(merged_into_id__in=merged_ids).update(merged_into=into)
    Category.objects.filter(pk__in=merged_ids).update(is_active=False, merged_into=into, updated_at=now)
    return moved


def categories_retire(*, categories: Iterable[Category]) -> int:
    """Retired categories keep their products but are no longer offered, and predictions of them wait for
    review instead of filing products."""
    return Category.objects.filter(pk__in=[category.pk for category in categories], is_active=True).update(
        is_active=False, updated_at=timezone.now()
    )


def categories_reactivate(*, categories: Iterable[Category]) -> int:
    """Active again, and no longer redirected to a category they were merged into."""
    return Category.objects.filter(pk__in=[category.pk for category in categories]).update(
        is_active=True, merged_into=None, updated_at=timezone.now()
    )
