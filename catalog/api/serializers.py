"""What the API shows and accepts. Writes are validated here for shape, then saved by catalog.services."""

from decimal import Decimal

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from catalog.colors import COLOR_NAMES
from catalog.models import Category, Product
from catalog.services.products import SKU_TAKEN

PRODUCT_CLASSIFICATION_VIEW = "catalog-api:product-classification"


@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": r"^\d{1,8}(\.\d{1,2})?$", "example": "19.90"}
)
class PriceField(serializers.DecimalField):
    """A price in the shop's currency, sent and shown as a string such as "19.90"; never negative."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_digits=10, decimal_places=2, min_value=Decimal("0"), **kwargs)


class CategorySummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["slug", "name"]
        read_only_fields = fields


class CategorySerializer(serializers.ModelSerializer):
    product_count = serializers.IntegerField(read_only=True, help_text="Published products in the category.")

    class Meta:
        model = Category
        fields = ["slug", "name", "product_count"]
        read_only_fields = fields


class ProductSerializer(serializers.ModelSerializer):
    """A product as the storefront shows it: no classification internals."""

    price = PriceField(read_only=True)
    image_url = serializers.ImageField(source="image", read_only=True, help_text="Absolute URL of the photo.")
    category = CategorySummarySerializer(read_only=True, allow_null=True)
    colors = serializers.ListField(
        child=serializers.ChoiceField(choices=COLOR_NAMES),
        read_only=True,
        help_text="The product's dominant colours in its photo, the largest share first.",
    )

    class Meta:
        model = Product
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "price",
            "image_url",
            "colors",
            "category",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CategorySlugField(serializers.SlugRelatedField):
    """An active category by its slug; text no slug can hold (a NUL byte) is "no such category" too."""

    def to_internal_value(self, data: object) -> Category:
        if isinstance(data, str) and "\x00" in data:
            # PostgreSQL refuses NUL in any query: asking would be a server error, not an answer.
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", "\u2400"))
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "string",
        "description": (
            "Slug of an active category: a person's choice that no prediction replaces. "
            "Left out or empty: the classifier files the product."
        ),
    }
)
class OptionalCategoryField(CategorySlugField):
    """A category slug in a form, where an empty value means none (as an HTML form sends it)."""


class ProductCreateSerializer(serializers.Serializer):
    """A new product, sent as multipart/form-data with its photo."""

    name = serializers.CharField(max_length=200)
    sku = serializers.CharField(
        max_length=64,
        validators=[UniqueValidator(queryset=Product.objects.all(), message=SKU_TAKEN)],
    )
    price = PriceField()
    image = serializers.FileField(
        allow_empty_file=True,
        help_text="JPEG, PNG, WebP or GIF photo; checked by content, and its name must match the format.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    category = OptionalCategoryField(
        slug_field="slug",
        queryset=Category.objects.filter(is_active=True),
        required=False,
        error_messages={"does_not_exist": gettext_lazy("No active category has the slug {value}.")},
    )
    is_published = serializers.BooleanField(default=True)


class ProductCreatedSerializer(ProductSerializer):
    """The product just saved, its classification status, and where to follow it."""

    status = serializers.ChoiceField(choices=Product.Status.choices, read_only=True)
    classification_url = serializers.HyperlinkedIdentityField(
        view_name=PRODUCT_CLASSIFICATION_VIEW,
        lookup_url_kwarg="id_or_slug",
        help_text="Poll this URL (needs `catalog.view_product`) for the category the classifier suggests.",
    )

    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "status", "classification_url"]
        read_only_fields = fields


class ModelVersionSummarySerializer(serializers.Serializer):
    """The model version that made a prediction (the classifier's ModelVersion, read through the relation)."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class PossibleDuplicateSerializer(serializers.Serializer):
    """The product this one looks like (catalog.services.duplicates): flagged for a person, never refused."""

    id = serializers.IntegerField(source="duplicate_of.id", read_only=True)
    slug = serializers.CharField(source="duplicate_of.slug", read_only=True)
    kind = serializers.ChoiceField(
        source="duplicate_kind",
        choices=[Product.DuplicateKind.HASH, Product.DuplicateKind.EMBEDDING],
        read_only=True,
        help_text="`hash`: the same photo re-encoded or resized; `embedding`: the model sees the same thing.",
    )
    score = serializers.FloatField(
        source="duplicate_score",
        read_only=True,
        help_text=(
            "hash: bits of 64 that differ (lower: closer); embedding: cosine similarity (higher: closer)."
        ),
    )

    def to_representation(self, product: Product) -> dict | None:
        return None if product.duplicate_of_id is None else super().to_representation(product)


class ProductClassificationSerializer(serializers.ModelSerializer):
    """Where a product stands with the classifier, for callers who may view products."""

    product_id = serializers.IntegerField(source="id", read_only=True)
    category = CategorySummarySerializer(read_only=True, allow_null=True)
    suggested_category = CategorySummarySerializer(
        read_only=True, allow_null=True, help_text="The category the model predicted, confident or not."
    )
    model_version = ModelVersionSummarySerializer(
        read_only=True, allow_null=True, help_text="The model that made the prediction."
    )
    error = serializers.CharField(
        source="classification_error", read_only=True, help_text="Why classification failed; empty otherwise."
    )
    review_reason = serializers.ChoiceField(
        choices=Product.ReviewReason.choices,
        read_only=True,
        help_text="Why the prediction waits for a person instead of filing the product; empty: it filed.",
    )
    review_reason_text = serializers.CharField(
        source="get_review_reason_display", read_only=True, help_text="The same reason in words."
    )
    unfamiliarity = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="How unlike the training photos this photo is (higher: stranger); null: not measured.",
    )
    category_source = serializers.ChoiceField(
        choices=Product.CategorySource.choices,
        read_only=True,
        help_text=(
            "Who decided the category: `predicted` (the model filed it), `person` (a person chose it; with "
            "`category` null they decided it has none, and no prediction files it), empty: nobody yet."
        ),
    )
    reviewed_by = serializers.CharField(
        source="reviewed_by.get_username", read_only=True, allow_null=True, help_text="Who set the category."
    )
    duplicate_of = PossibleDuplicateSerializer(
        source="*",
        read_only=True,
        allow_null=True,
        help_text="Another product this photo looks like; null: none.",
    )

    class Meta:
        model = Product
        fields = [
            "product_id",
            "status",
            "status_changed_at",
            "category",
            "category_source",
            "suggested_category",
            "confidence",
            "review_reason",
            "review_reason_text",
            "unfamiliarity",
            "model_version",
            "error",
            "reviewed_at",
            "reviewed_by",
            "duplicate_of",
        ]
        read_only_fields = fields


class CategoryCorrectionSerializer(serializers.Serializer):
    category = CategorySlugField(
        slug_field="slug",
        queryset=Category.objects.filter(is_active=True),
        allow_null=True,
        error_messages={"does_not_exist": gettext_lazy("No active category has the slug {value}.")},
        help_text=(
            "Slug of the active category the product belongs to, or null: it belongs to none. Either way a "
            "person's decision: it marks the product reviewed and no prediction files it after."
        ),
    )
