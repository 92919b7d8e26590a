import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.request import Request
from rest_framework.views import APIView

from catalog.colors import COLOR_NAMES
from catalog.models import Product


class ProductFilter(django_filters.FilterSet):
    category = django_filters.CharFilter(
        field_name="category__slug",
        max_length=100,
        help_text="Slug of a category: only its products. An unknown slug gives an empty page.",
    )

    color = django_filters.ChoiceFilter(
        choices=[(name, name) for name in COLOR_NAMES],
        method="filter_color",
        help_text="A colour name: only products with that colour among their dominant ones.",
    )

    class Meta:
        model = Product
        fields = ["category", "color"]

    def filter_color(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # The JSON list as text holds each name quoted; the choices keep quotes and wildcards out of value.
        return queryset.filter(colors__icontains=f'"{value}"')


# Each word adds a LIKE to the query; a name search needs few, and a flood of them must not cost a scan each.
MOST_SEARCH_WORDS = 10


class ProductNameSearchFilter(SearchFilter):
    search_description = (
        f"Products whose name contains every word given, ignoring case; at most {MOST_SEARCH_WORDS} words."
    )

    def get_search_terms(self, request: Request) -> list[str]:
        try:
            terms = super().get_search_terms(request)
        except ValidationError as error:
            # DRF reports a bad term as a bare list; name the parameter like every other 400 does.
            raise ValidationError({self.search_param: error.detail}) from None
        if len(terms) > MOST_SEARCH_WORDS:
            refusal = gettext("Search for at most %(count)d words.") % {"count": MOST_SEARCH_WORDS}
            raise ValidationError({self.search_param: [refusal]})
        return terms


class StableOrderingFilter(OrderingFilter):
    """OrderingFilter that breaks ties by id, so equal names or prices never repeat or skip across pages."""

    ordering_description = (
        "Sort by name, price or created_at; a leading - sorts descending (default: -created_at). "
        "Other values are ignored."
    )

    def filter_queryset(self, request: Request, queryset: QuerySet, view: APIView) -> QuerySet:
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        tie_breaker = "-pk" if ordering[0].startswith("-") else "pk"
        return queryset.order_by(*ordering, tie_breaker)
