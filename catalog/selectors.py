"""Reads from the catalog, with the joins the pages showing them need."""

from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.utils.text import slugify

from catalog.models import WAITING_STATUSES, Category, LanguagePreference, Product


def product_list(*, status: str | None = None, category: Category | None = None) -> QuerySet[Product]:
    products = Product.objects.select_related("category", "suggested_category", "model_version")
    if status is not None:
        products = products.filter(status=status)
    if category is not None:
        products = products.filter(category=category)
    return products


def products_needing_review() -> QuerySet[Product]:
    """Products whose prediction was not confident enough and that no person has filed yet, oldest first."""
    return (
        product_list(status=Product.Status.NEEDS_REVIEW)
        .exclude(category_source=Product.CategorySource.PERSON)
        .order_by("status_changed_at", "pk")
    )


def category_list_with_product_count() -> QuerySet[Category]:
    return Category.objects.annotate(product_count=Count("products"))


def category_by_name(*, name: str) -> Category | None:
    """The category a name (a model class, a photo folder) stands for: same slug, else same name."""
    name = " ".join(name.split())
    return Category.objects.filter(slug=slugify(name)).first() or Category.objects.filter(name=name).first()


def category_merged_target(*, category: Category) -> Category:
    """The category products of `category` go to now: itself, or the one it was (transitively) merged into."""
    seen = {category.pk}
    while category.merged_into_id is not None and category.merged_into_id not in seen:
        category = category.merged_into
        seen.add(category.pk)
    return category


def product_ids_waiting(*, since_before: datetime) -> list[int]:
    """Products pending or queued since before `since_before`, longest waiting first."""
    return list(
        Product.objects.filter(status__in=WAITING_STATUSES, status_changed_at__lt=since_before)
        .order_by("status_changed_at")
        .values_list("pk", flat=True)
    )


def products_reviewed_for_training() -> QuerySet[Product]:
    """Products a person filed under an active category: what a retrain learns from."""
    return (
        Product.objects.filter(
            category_source=Product.CategorySource.PERSON, category__isnull=False, category__is_active=True
        )
        .select_related("category")
        .order_by("pk")
    )


def products_classification_attempts(*, product_ids: list[int]) -> dict[int, int]:
    """Each product's counted deliveries that never ended (its worker died), by id (none for one gone)."""
    return dict(Product.objects.filter(pk__in=product_ids).values_list("pk", "classification_attempts"))


def user_language_get(*, user: AbstractBaseUser) -> str:
    """The language the person chose, or "" to follow their browser."""
    language = LanguagePreference.objects.filter(user=user).values_list("language", flat=True).first()
    return language or ""
