from collections.abc import Callable

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

# Registers the "Import products" pages (catalog.admin_imports) with the admin site.
from catalog.admin_imports import ProductImportAdmin  # noqa: F401
from catalog.forms import ProductAdminForm, ProductImageForm
from catalog.models import Category, Product, ProductImage, ReviewQueueItem
from catalog.selectors import category_list_with_product_count, products_needing_review
from catalog.services.categories import (
    CategoryMergeError,
    categories_merge,
    categories_reactivate,
    categories_retire,
)
from catalog.services.products import (
    PRODUCT_EDITABLE_FIELDS,
    ProductSkuTaken,
    ReviewError,
    product_accept_suggestion,
    product_create,
    product_file_under,
    product_update,
    products_accept_suggestions,
    products_classify_again,
)

# Views that change data answer POST only; a link or a prefetch must not file a product.
post_only = method_decorator(require_POST)
PRODUCT_FIELDS_ON_ADD = ("name", "description", "price", "sku", "image", "category", "is_published")


def _image_tag(image, *, size: int) -> str:
    if not image:
        return ""
    return format_html(
        '<img src="{}" alt="" width="{}" height="{}" style="object-fit: contain; background: #fff">',
        image.url,
        size,
        size,
    )


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
        return _image_tag(obj.image, size=64)


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


class ConfidenceColumn:
    """The prediction's confidence as a percentage, for the product lists."""

    @admin.display(description=_("Confidence"), ordering="confidence")
    def confidence_percent(self, obj: Product) -> str:
        if obj.confidence is None:
            return self.get_empty_value_display()
        return f"{obj.confidence:.1%}"


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
        return _image_tag(obj.image, size=48)

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
            _image_tag(obj.image, size=120),
            _image_tag(other.image, size=120),
        )

    @admin.display(description=_("Current image"))
    def image_preview(self, obj: Product) -> str:
        return _image_tag(obj.image, size=240)

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
        return _image_tag(obj.image, size=64)

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


# Registered here because Django discovers admin.py only.
from catalog import admin_webhooks  # noqa: E402, F401
