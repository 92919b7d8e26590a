"""The catalog's review queue with what the classifier adds: the "most useful to label first" order and
"new categories to consider".

The catalog orders its queue by confidence alone; the classifier knows each photo's two best categories and
its embedding, and registers its own subclass of the queue's admin with an order that uses them
(classifier.selectors.review_queue_label_next), and with groups of alike photos of no known category offered
as new categories (classifier.selectors.review_queue_new_categories).
"""

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, F, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from catalog.admin.common import post_only
from catalog.admin.review_queue import ReviewQueueAdmin
from catalog.models import Product, ReviewQueueItem
from catalog.services.products import ReviewError, products_file_under_new_category
from classifier.selectors import review_queue_label_next, review_queue_new_categories

admin.site.unregister(ReviewQueueItem)

USEFUL = "useful"
# A refused "create category" keeps what was typed here, for the queue page to show with the error.
NEW_CATEGORY_SESSION_KEY = "vitrine_review_queue_new_category"


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

    def has_new_category_permission(self, request: HttpRequest) -> bool:
        # Creating the category and filing the photos under it: both permissions.
        return self.has_change_permission(request) and request.user.has_perm("catalog.add_category")

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path(
                "new-category/",
                wrap(self.new_category_view),
                name="catalog_reviewqueueitem_new_category",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        refused = request.session.pop(NEW_CATEGORY_SESSION_KEY, None)
        new_categories = []
        if self.has_new_category_permission(request):
            groups = review_queue_new_categories(
                similarity=settings.VITRINE_PROPOSE_SIMILARITY, min_photos=settings.VITRINE_PROPOSE_MIN_PHOTOS
            )
            for products in groups:
                ids = [product.pk for product in products]
                again = refused is not None and refused["photos"] == ids
                new_categories.append(
                    {
                        "products": products,
                        "photo_ids": ",".join(map(str, ids)),
                        "name": refused["name"] if again else "",
                        "error": refused["error"] if again else "",
                    }
                )
                refused = None if again else refused
        if refused is not None:
            # The group changed meanwhile (photos decided): the error still says why nothing was created.
            self.message_user(request, refused["error"], messages.ERROR)
        return super().changelist_view(request, {"new_categories": new_categories, **(extra_context or {})})

    @post_only
    def new_category_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if not self.has_new_category_permission(request):
            raise PermissionDenied
        raw_ids = request.POST.get("photos", "").split(",")
        product_ids = [int(raw) for raw in raw_ids if raw.strip().isdigit()]
        name = request.POST.get("name", "")
        try:
            category, filed = products_file_under_new_category(
                name=name, product_ids=product_ids, reviewed_by=request.user
            )
        except ReviewError as error:
            request.session[NEW_CATEGORY_SESSION_KEY] = {
                "photos": product_ids,
                "name": name,
                "error": str(error),
            }
        else:
            message = ngettext(
                "Category %(category)s created; %(count)d photo filed under it.",
                "Category %(category)s created; %(count)d photos filed under it.",
                len(filed),
            )
            self.message_user(
                request, message % {"category": category.name, "count": len(filed)}, messages.SUCCESS
            )
        return HttpResponseRedirect(reverse("admin:catalog_reviewqueueitem_changelist"))
