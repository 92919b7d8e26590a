"""The admin's product pages: add and edit products, their photos, possible duplicates, classify again."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from catalog.admin.common import ConfidenceColumn, image_tag, post_only
from catalog.forms import ProductAdminForm, ProductImageForm
from catalog.models import Product, ProductImage
from catalog.services.products import (
    PRODUCT_EDITABLE_FIELDS,
    ProductSkuTaken,
    product_create,
    product_update,
    products_classify_again,
)

PRODUCT_FIELDS_ON_ADD = ("name", "description", "price", "sku", "image", "category", "is_published")


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    extra = 1
    fields = ("preview", "image", "position")
    readonly_fields = ("preview",)
    verbose_name = _("more image")
    verbose_name_plural = _("more images")

    @admin.display(description=_("Preview"))
    def preview(self, obj: ProductImage) -> str:
        return image_tag(obj.image, size=64)


class PossibleDuplicateFilter(admin.SimpleListFilter):
    title = _("possible duplicates")
    parameter_name = "duplicate"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", _("Looks like another product")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> QuerySet[Product]:
        if self.value() == "yes":
            return queryset.filter(duplicate_of__isnull=False)
        if self.value() == "no":
            return queryset.filter(duplicate_of__isnull=True)
        return queryset


def duplicate_description(product: Product) -> str:
    """How the flag was found, in words: "same photo, 3 of 64 bits differ" or "similar photo, 0.97"."""
    if product.duplicate_kind == Product.DuplicateKind.HASH:
        return gettext("same photo: %(bits)d of 64 hash bits differ") % {"bits": product.duplicate_score}
    return gettext("similar photo: cosine similarity %(score).3f") % {"score": product.duplicate_score}


@admin.register(Product)
class ProductAdmin(ConfidenceColumn, admin.ModelAdmin):
    form = ProductAdminForm
    inlines = [ProductImageInline]
    list_display = (
        "thumbnail",
        "name",
        "sku",
        "price",
        "category",
        "category_source",
        "suggested_category",
        "confidence_percent",
        "model_version",
        "status",
    )
    list_display_links = ("thumbnail", "name")
    list_filter = ("status", "category", "category_source", PossibleDuplicateFilter)
    list_select_related = ("category", "suggested_category", "model_version", "duplicate_of")
    search_fields = ("name", "sku")
    actions = ["classify_again"]
    change_form_template = "vitrine/product_change_form.html"
    change_list_template = "vitrine/product_change_list.html"
    readonly_fields = (
        "slug",
        "image_preview",
        "colour_names",
        "looks_like",
        "category_source",
        "reviewed_at",
        "reviewed_by",
        "status",
        "classification_error",
        "suggested_category",
        "confidence_percent",
        "review_reason",
        "unfamiliarity",
        "model_version",
        "status_changed_at",
        "image_sha256",
        "created_by",
        "created_at",
        "updated_at",
    )

    @admin.display(description=_("Colours"))
    def colour_names(self, obj: Product) -> str:
        return ", ".join(obj.colors) or "—"

    def get_fieldsets(self, request: HttpRequest, obj: Product | None = None):
        if obj is None:
            return [(None, {"fields": PRODUCT_FIELDS_ON_ADD})]
        classification = [
            "status",
            "suggested_category",
            "confidence_percent",
            "review_reason",
            "unfamiliarity",
            "model_version",
        ]
        if obj.classification_error:
            classification.insert(1, "classification_error")
        image_fields = ("image_preview", "image", "colour_names")
        if obj.duplicate_of_id is not None:
            image_fields = ("looks_like", *image_fields)
        return [
            (None, {"fields": ("name", "slug", "description", "price", "sku", "is_published")}),
            (_("Image"), {"fields": image_fields}),
            (_("Category"), {"fields": ("category", "category_source", "reviewed_at", "reviewed_by")}),
            (_("Classification"), {"fields": [*classification, "status_changed_at", "image_sha256"]}),
            (_("History"), {"fields": ("created_by", "created_at", "updated_at"), "classes": ["collapse"]}),
        ]

    @admin.display(description=_("Photo"))
    def thumbnail(self, obj: Product) -> str:
        return image_tag(obj.image, size=48)

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:product_id>/classify-again/",
                wrap(self.classify_again_view),
                name="catalog_product_classify_again",
            ),
            *super().get_urls(),
        ]

    @post_only
    def classify_again_view(self, request: HttpRequest, product_id: int) -> HttpResponseRedirect:
        """The change page's "Retry" of a failed classification (any product's, like the action)."""
        product = get_object_or_404(Product, pk=product_id)
        if not self.has_change_permission(request, product):
            raise PermissionDenied
        products_classify_again(products=[product])
        self.message_user(
            request,
            gettext("%(product)s is queued for classification.") % {"product": product.name},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:catalog_product_change", args=[product.pk]))

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ProductSkuTaken:
            # Another save took the SKU after this form was checked; checked again, the form says so.
            return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("Possible duplicate"))
    def looks_like(self, obj: Product) -> str:
        """Both photos side by side with a link to the other product: a person decides, nothing is refused."""
        other = obj.duplicate_of
        if other is None:
            return "—"
        return format_html(
            '<div>{} <a href="{}">{}</a> ({})</div><div>{} {}</div>',
            gettext("Looks like"),
            reverse("admin:catalog_product_change", args=[other.pk]),
            other.name,
            duplicate_description(obj),
            image_tag(obj.image, size=120),
            image_tag(other.image, size=120),
        )

    @admin.display(description=_("Current image"))
    def image_preview(self, obj: Product) -> str:
        return image_tag(obj.image, size=240)

    def save_model(self, request: HttpRequest, obj: Product, form: ProductAdminForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changed = {field: data[field] for field in form.changed_data if field in PRODUCT_EDITABLE_FIELDS}
            product = product_update(product=obj, updated_by=request.user, **changed)
        else:
            product = product_create(
                **{field: data[field] for field in PRODUCT_FIELDS_ON_ADD}, created_by=request.user
            )
        # The admin goes on with `obj` (inline images, history, redirect), so it must become the saved row.
        obj.pk = product.pk
        obj.refresh_from_db()
        obj._state.adding = False

    @admin.action(description=_("Classify the selected products again"), permissions=["change"])
    def classify_again(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        count = products_classify_again(products=queryset)
        message = ngettext(
            "%(count)d product queued for classification.",
            "%(count)d products queued for classification.",
            count,
        )
        self.message_user(request, message % {"count": count}, messages.SUCCESS)
