from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from catalog.forms import ProductAdminForm, ProductImageForm
from catalog.models import Category, Product, ProductImage
from catalog.selectors import category_list_with_product_count
from catalog.services import PRODUCT_EDITABLE_FIELDS, product_create, product_update, products_classify_again

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
    verbose_name = "more image"
    verbose_name_plural = "more images"

    @admin.display(description="Preview")
    def preview(self, obj: ProductImage) -> str:
        return _image_tag(obj.image, size=64)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
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
    list_filter = ("status", "category", "category_source")
    list_select_related = ("category", "suggested_category", "model_version")
    search_fields = ("name", "sku")
    actions = ["classify_again"]
    readonly_fields = (
        "slug",
        "image_preview",
        "category_source",
        "reviewed_at",
        "reviewed_by",
        "status",
        "classification_error",
        "suggested_category",
        "confidence_percent",
        "model_version",
        "status_changed_at",
        "image_sha256",
        "created_by",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Product | None = None):
        if obj is None:
            return [(None, {"fields": PRODUCT_FIELDS_ON_ADD})]
        classification = ["status", "suggested_category", "confidence_percent", "model_version"]
        if obj.classification_error:
            classification.insert(1, "classification_error")
        return [
            (None, {"fields": ("name", "slug", "description", "price", "sku", "is_published")}),
            ("Image", {"fields": ("image_preview", "image")}),
            ("Category", {"fields": ("category", "category_source", "reviewed_at", "reviewed_by")}),
            ("Classification", {"fields": [*classification, "status_changed_at", "image_sha256"]}),
            ("History", {"fields": ("created_by", "created_at", "updated_at"), "classes": ["collapse"]}),
        ]

    @admin.display(description="Photo")
    def thumbnail(self, obj: Product) -> str:
        return _image_tag(obj.image, size=48)

    @admin.display(description="Current image")
    def image_preview(self, obj: Product) -> str:
        return _image_tag(obj.image, size=240)

    @admin.display(description="Confidence", ordering="confidence")
    def confidence_percent(self, obj: Product) -> str:
        if obj.confidence is None:
            return self.get_empty_value_display()
        return f"{obj.confidence:.1%}"

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

    @admin.action(description="Classify the selected products again")
    def classify_again(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        count = products_classify_again(products=queryset)
        self.message_user(request, f"{count} product(s) queued for classification.", messages.SUCCESS)


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "is_active", "product_count")
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fields = ("name", "slug", "is_active")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return category_list_with_product_count()

    @admin.display(description="Products", ordering="product_count")
    def product_count(self, obj: Category) -> str:
        url = reverse("admin:catalog_product_changelist")
        return format_html('<a href="{}?category__id__exact={}">{}</a>', url, obj.pk, obj.product_count)
