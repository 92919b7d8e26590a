"""The catalog's review queue with the classifier's order added: "most useful to label first".

The catalog orders its queue by confidence alone; the classifier knows each photo's two best categories and
its embedding, and registers its own subclass of the queue's admin with an order that uses them
(classifier.selectors.review_queue_label_next).
"""

from django.contrib import admin
from django.db.models import Case, F, IntegerField, QuerySet, Value, When
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from catalog.admin import ReviewQueueAdmin
from catalog.models import Product, ReviewQueueItem
from classifier.selectors import review_queue_label_next

admin.site.unregister(ReviewQueueItem)

USEFUL = "useful"


class LabelOrderFilter(admin.SimpleListFilter):
    """Not a filter: the order of the queue, offered where the admin's filters are."""

    title = _("order")
    parameter_name = "order"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [(USEFUL, _("Most useful to label first"))]

    def choices(self, changelist) -> list:
        choices = list(super().choices(changelist))
        choices[0]["display"] = _("Least confident first")
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> QuerySet[Product]:
        if self.value() != USEFUL:
            return queryset
        ranked = review_queue_label_next(products=queryset)
        rank = Case(
            *(When(pk=pk, then=Value(index)) for index, pk in enumerate(ranked)),
            default=Value(len(ranked)),
            output_field=IntegerField(),
        )
        return queryset.annotate(label_rank=rank)


@admin.register(ReviewQueueItem)
class LabelNextReviewQueueAdmin(ReviewQueueAdmin):
    list_filter = (LabelOrderFilter, *ReviewQueueAdmin.list_filter)

    def get_ordering(self, request: HttpRequest) -> list:
        if request.GET.get(LabelOrderFilter.parameter_name) == USEFUL:
            return [F("label_rank").asc(), *self.ordering]
        return super().get_ordering(request)
