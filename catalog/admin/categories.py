"""The admin's category pages: rename, merge, retire and reactivate categories."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from catalog.models import Category
from catalog.selectors import category_list_with_product_count
from catalog.services.categories import (
    CategoryMergeError,
    categories_merge,
    categories_reactivate,
    categories_retire,
)


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "is_active", "product_count", "merged_into")
    list_filter = ("is_active",)
    list_select_related = ("merged_into",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fields = ("name", "slug", "is_active", "merged_into")
    readonly_fields = ("merged_into",)
    actions = ["merge_categories", "retire_categories", "reactivate_categories"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return category_list_with_product_count()

    def get_readonly_fields(self, request: HttpRequest, obj: Category | None = None) -> tuple:
        # The slug ties a category to the model's class names; renaming changes the name only.
        return ("slug", "merged_into") if obj is not None else ("merged_into",)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Category | None = None) -> dict:
        return {} if obj is not None else self.prepopulated_fields

    @admin.action(description=_("Merge the selected categories into one…"), permissions=["change"])
    def merge_categories(self, request: HttpRequest, queryset: QuerySet[Category]) -> TemplateResponse | None:
        categories = list(queryset.order_by("name"))
        if len(categories) < 2:
            self.message_user(request, gettext("Select two or more categories to merge."), messages.ERROR)
            return None
        into_id = request.POST.get("into", "")
        into = next((category for category in categories if str(category.pk) == into_id), None)
        if request.POST.get("confirm_merge") and into is not None:
            try:
                moved = categories_merge(into=into, merged=categories)
            except CategoryMergeError as error:
                self.message_user(request, str(error), messages.ERROR)
                return None
            merged_names = ", ".join(category.name for category in categories if category.pk != into.pk)
            self.message_user(
                request,
                ngettext(
                    "Merged %(merged)s into %(into)s: %(count)d product moved; the merged categories are "
                    "retired and their predictions now file into it.",
                    "Merged %(merged)s into %(into)s: %(count)d products moved; the merged categories are "
                    "retired and their predictions now file into it.",
                    moved,
                )
                % {"merged": merged_names, "into": into.name, "count": moved},
                messages.SUCCESS,
            )
            return None
        return TemplateResponse(
            request,
            "vitrine/category_merge.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Merge categories"),
                "opts": self.model._meta,
                "categories": categories,
                "into_id": into_id,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description=_("Retire the selected categories"), permissions=["change"])
    def retire_categories(self, request: HttpRequest, queryset: QuerySet[Category]) -> None:
        count = categories_retire(categories=queryset)
        self.message_user(
            request,
            ngettext(
                "%(count)d category retired: no longer offered; what the model files there waits for review.",
                "%(count)d categories retired: no longer offered; what the model files there waits for "
                "review.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description=_("Reactivate the selected categories"), permissions=["change"])
    def reactivate_categories(self, request: HttpRequest, queryset: QuerySet[Category]) -> None:
        count = categories_reactivate(categories=queryset)
        self.message_user(
            request,
            ngettext("%(count)d category active again.", "%(count)d categories active again.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.display(description=_("Products"), ordering="product_count")
    def product_count(self, obj: Category) -> str:
        url = reverse("admin:catalog_product_changelist")
        return format_html('<a href="{}?category__id__exact={}">{}</a>', url, obj.pk, obj.product_count)
