"""Reads from the catalog, with the joins the pages showing them need."""

from django.db.models import Count, QuerySet

from catalog.models import Category, Product


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
