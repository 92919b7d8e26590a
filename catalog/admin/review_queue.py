"""The admin's review queue: products the model was not sure about, to accept, correct or bulk-accept."""

from collections.abc import Callable

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from catalog.admin.common import ConfidenceColumn, image_tag, post_only
from catalog.models import Category, Product, ReviewQueueItem
from catalog.selectors import products_needing_review
from catalog.services.products import (
    ReviewError,
    product_accept_suggestion,
    product_file_under,
    products_accept_suggestions,
)


@admin.register(ReviewQueueItem)
class ReviewQueueAdmin(ConfidenceColumn, admin.ModelAdmin):
    """Products the model was not sure about, the least sure first: accept, correct, or bulk-accept."""

    list_display_links = None
    list_per_page = 50
    search_fields = ("name", "sku")
    list_filter = ("suggested_category",)
    actions = ["accept_suggestions"]
    change_list_template = "vitrine/review_queue_change_list.html"
    # The admin's ordering comes before the queryset's: without it the model's own (newest first) would win.
    ordering = ("confidence", "status_changed_at", "pk")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return products_needing_review()

    def get_list_display(self, request: HttpRequest) -> tuple:
        columns = ("thumbnail", "product", "suggestion", "confidence_percent", "reason")
        if not self.has_change_permission(request):
            return columns
        # Read once per page, not once per row; a closure keeps it out of the shared admin instance.
        categories = list(Category.objects.filter(is_active=True).only("pk", "name"))

        @admin.display(description=_("Decision"))
        def decision(obj: Product) -> str:
            return self._decision_controls(obj, categories)

        return (*columns, decision)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        # Deciding files the product, so it takes the product's own change permission.
        return request.user.has_perm("catalog.change_product")

    def has_delete_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        return False

    def change_view(self, request: HttpRequest, object_id: str, *args, **kwargs) -> HttpResponse:
        # A product is edited on its own page; the queue only decides categories.
        return HttpResponseRedirect(reverse("admin:catalog_product_change", args=[object_id]))

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("<int:product_id>/accept/", wrap(self.accept_view), name="catalog_reviewqueueitem_accept"),
            path(
                "<int:product_id>/set-category/",
                wrap(self.set_category_view),
                name="catalog_reviewqueueitem_set_category",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": gettext("Review queue"), **(extra_context or {})})

    @admin.display(description=_("Photo"))
    def thumbnail(self, obj: Product) -> str:
        return image_tag(obj.image, size=64)

    @admin.display(description=_("Product"), ordering="name")
    def product(self, obj: Product) -> str:
        url = reverse("admin:catalog_product_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a><br><small>{}</small>', url, obj.name, obj.sku)

    @admin.display(description=_("Suggestion"), ordering="suggested_category__name")
    def suggestion(self, obj: Product) -> str:
        if obj.suggested_category is None:
            return self.get_empty_value_display()
        if not obj.suggested_category.is_active:
            return format_html("{} <small>{}</small>", obj.suggested_category.name, gettext("(retired)"))
        return obj.suggested_category.name

    @admin.display(description=_("Why it waits"), ordering="review_reason")
    def reason(self, obj: Product) -> str:
        return obj.get_review_reason_display() if obj.review_reason else self.get_empty_value_display()

    def _decision_controls(self, obj: Product, categories: list[Category]) -> str:
        # Buttons of the changelist's own form, each posting to its own view (forms cannot nest).
        accept = ""
        if obj.suggested_category is not None and obj.suggested_category.is_active:
            accept = format_html(
                '<button type="submit" class="button default" id="accept-{}" formaction="{}">{}</button> ',
                obj.pk,
                reverse("admin:catalog_reviewqueueitem_accept", args=[obj.pk]),
                gettext("Accept suggestion"),
            )
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            (
                (category.pk, " selected" if category.pk == obj.suggested_category_id else "", category.name)
                for category in categories
            ),
        )
        return format_html(
            '{}<select name="category-for-{}" id="category-for-{}" class="review-category" '
            'aria-label="{}">{}</select> '
            '<button type="submit" class="button" id="set-category-{}" formaction="{}">{}</button>',
            accept,
            obj.pk,
            obj.pk,
            gettext("Category for %(product)s") % {"product": obj.name},
            options,
            obj.pk,
            reverse("admin:catalog_reviewqueueitem_set_category", args=[obj.pk]),
            gettext("Set category"),
        )

    def _decided(self, request: HttpRequest, decide: Callable[[], Product]) -> HttpResponseRedirect:
        if not self.has_change_permission(request):
            raise PermissionDenied
        try:
            product = decide()
        except ReviewError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(
                request,
                gettext("%(product)s is filed under %(category)s.")
                % {"product": product.name, "category": product.category.name},
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:catalog_reviewqueueitem_changelist"))

    @staticmethod
    def _product(product_id: int) -> Product:
        return get_object_or_404(Product.objects.select_related("suggested_category"), pk=product_id)

    @post_only
    def accept_view(self, request: HttpRequest, product_id: int) -> HttpResponseRedirect:
        product = self._product(product_id)
        return self._decided(
            request, lambda: product_accept_suggestion(product=product, reviewed_by=request.user)
        )

    @post_only
    def set_category_view(self, request: HttpRequest, product_id: int) -> HttpResponseRedirect:
        product = self._product(product_id)
        category_id = request.POST.get(f"category-for-{product_id}", "")
        category = Category.objects.filter(pk=int(category_id)).first() if category_id.isdigit() else None

        def decide() -> Product:
            if category is None:
                raise ReviewError(gettext("Choose a category for %(product)s.") % {"product": product.name})
            return product_file_under(product=product, category=category, reviewed_by=request.user)

        return self._decided(request, decide)

    @admin.action(description=_("Accept the suggestions of the selected products"), permissions=["change"])
    def accept_suggestions(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        accepted, problems = products_accept_suggestions(
            products=queryset.select_related("suggested_category"), reviewed_by=request.user
        )
        if accepted:
            message = ngettext(
                "%(count)d product filed under its suggestion.",
                "%(count)d products filed under their suggestions.",
                accepted,
            )
            self.message_user(request, message % {"count": accepted}, messages.SUCCESS)
        for problem in problems:
            self.message_user(request, problem, messages.WARNING)
