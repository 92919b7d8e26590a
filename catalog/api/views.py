"""The catalog API. Reads build their queries here; every write goes through catalog.services."""

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q, QuerySet
from django.urls import reverse
from django.utils.translation import gettext
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.api.caching import ConditionalStorefrontReadMixin
from catalog.api.filters import ProductFilter, ProductNameSearchFilter, StableOrderingFilter
from catalog.api.pagination import CatalogPagination
from catalog.api.permissions import (
    ClassifyAgainPermission,
    ModelPermissionsForReads,
    StorefrontReadsOpen,
)
from catalog.api.schema import error_responses
from catalog.api.serializers import (
    CategoryCorrectionSerializer,
    CategorySerializer,
    ProductClassificationSerializer,
    ProductCreatedSerializer,
    ProductCreateSerializer,
    ProductSerializer,
)
from catalog.models import Category, Product
from catalog.services.products import product_create, product_update, products_classify_again
from catalog.validators import ProductImageError

# Anything else cannot be an id or a slug, so it is answered 404 without reaching the database.
ID_OR_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,220}")
LARGEST_ID = 2**63 - 1
TEXT_WITHOUT_NUL = r"^[^\x00]*$"
ID_OR_SLUG_PARAMETER = OpenApiParameter(
    "id_or_slug",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    pattern=f"^{ID_OR_SLUG.pattern}$",
    description="The product's id (digits) or its slug.",
)


# Only what the storefront shows: no model building or type conversion for columns nobody reads.
STOREFRONT_COLUMNS = (
    *("id", "name", "slug", "description", "price", "image", "colors", "created_at", "updated_at"),
    *("category__slug", "category__name", "category__updated_at"),
)


def storefront_products(*, include_unpublished: bool = False) -> QuerySet[Product]:
    products = Product.objects.select_related("category").only(*STOREFRONT_COLUMNS)
    return products if include_unpublished else products.filter(is_published=True)


def product_for_id_or_slug(*, products: QuerySet[Product], id_or_slug: str) -> Product:
    """The product with this id, else the one with this slug (a slug may be all digits)."""
    if ID_OR_SLUG.fullmatch(id_or_slug):
        if id_or_slug.isdigit() and int(id_or_slug) <= LARGEST_ID:
            product = products.filter(pk=int(id_or_slug)).first()
            if product is not None:
                return product
        product = products.filter(slug=id_or_slug).first()
        if product is not None:
            return product
    raise NotFound(gettext("No product with this id or slug."))


def field_errors(error: DjangoValidationError) -> serializers.ValidationError:
    """A service's refusal as DRF field errors; a photo's problem is reported under "image"."""
    if isinstance(error, ProductImageError):
        return serializers.ValidationError({"image": error.messages})
    return serializers.ValidationError(serializers.as_serializer_error(error))


@extend_schema_view(
    get=extend_schema(
        summary="List published products",
        # Text without NUL bytes, which no slug or name holds (a NUL is a 400 naming the parameter).
        parameters=[
            OpenApiParameter(
                "category",
                {"type": "string", "maxLength": 100, "pattern": TEXT_WITHOUT_NUL},
                description="Slug of a category: only its products. An unknown slug gives an empty page.",
            ),
        ],
        responses={200: ProductSerializer(many=True), **error_responses(400, 401, 429)},
    ),
    post=extend_schema(
        summary="Create a product with its photo",
        description=(
            "Needs `catalog.add_product`. The photo is classified in the background; "
            "poll `classification_url` for the result."
        ),
        request={"multipart/form-data": ProductCreateSerializer},
        responses={201: ProductCreatedSerializer, **error_responses(400, 401, 403, 415)},
    ),
)
class ProductListCreateView(ConditionalStorefrontReadMixin, generics.ListCreateAPIView):
    permission_classes = [StorefrontReadsOpen]
    pagination_class = CatalogPagination
    # JSON is parsed too, so a JSON body gets "image: not a file" instead of a bare 415.
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filter_backends = [DjangoFilterBackend, ProductNameSearchFilter, StableOrderingFilter]
    filterset_class = ProductFilter
    search_fields = ["name"]
    ordering_fields = ["name", "price", "created_at"]
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[Product]:
        return storefront_products()

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return ProductCreateSerializer if self.request.method == "POST" else ProductSerializer

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = ProductCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        try:
            product = product_create(**serializer.validated_data, created_by=request.user)
        except DjangoValidationError as error:
            raise field_errors(error) from None
        created = ProductCreatedSerializer(product, context=self.get_serializer_context())
        location = request.build_absolute_uri(
            reverse("catalog-api:product-detail", kwargs={"id_or_slug": product.pk})
        )
        return Response(created.data, status=status.HTTP_201_CREATED, headers={"Location": location})


@extend_schema_view(
    get=extend_schema(
        summary="A product by id or slug",
        description=(
            "Anyone sees published products; callers with `catalog.view_product` also unpublished ones."
        ),
        parameters=[ID_OR_SLUG_PARAMETER],
        responses={200: ProductSerializer, **error_responses(401, 404, 429)},
    )
)
class ProductDetailView(ConditionalStorefrontReadMixin, generics.RetrieveAPIView):
    permission_classes = [StorefrontReadsOpen]
    pagination_class = None
    serializer_class = ProductSerializer

    def get_queryset(self) -> QuerySet[Product]:
        return storefront_products(include_unpublished=self.request.user.has_perm("catalog.view_product"))

    def get_object(self) -> Product:
        product = product_for_id_or_slug(products=self.get_queryset(), id_or_slug=self.kwargs["id_or_slug"])
        self.check_object_permissions(self.request, product)
        # The answer shows the product and its category's name: the later of their changes dates it.
        self.last_modified = max(
            product.updated_at, product.category.updated_at if product.category else product.updated_at
        )
        return product


def classification_products() -> QuerySet[Product]:
    return Product.objects.select_related(
        "category", "suggested_category", "model_version", "reviewed_by", "duplicate_of"
    )


@extend_schema_view(
    get=extend_schema(
        summary="A product's classification",
        description="Needs `catalog.view_product`.",
        parameters=[ID_OR_SLUG_PARAMETER],
        responses={200: ProductClassificationSerializer, **error_responses(401, 403, 404)},
    ),
    patch=extend_schema(
        summary="Correct a product's category",
        description=(
            "Needs `catalog.change_product`. A person's category (null: none): the product counts as "
            "reviewed and no prediction replaces it."
        ),
        parameters=[ID_OR_SLUG_PARAMETER],
        request=CategoryCorrectionSerializer,
        responses={200: ProductClassificationSerializer, **error_responses(400, 401, 403, 404, 415)},
    ),
)
class ProductClassificationView(generics.GenericAPIView):
    permission_classes = [ModelPermissionsForReads]
    pagination_class = None
    parser_classes = [JSONParser, FormParser, MultiPartParser]
    serializer_class = ProductClassificationSerializer

    def get_queryset(self) -> QuerySet[Product]:
        return classification_products()

    def get_object(self) -> Product:
        product = product_for_id_or_slug(products=self.get_queryset(), id_or_slug=self.kwargs["id_or_slug"])
        self.check_object_permissions(self.request, product)
        return product

    def get(self, request: Request, id_or_slug: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: Request, id_or_slug: str) -> Response:
        product = self.get_object()
        correction = CategoryCorrectionSerializer(data=request.data)
        correction.is_valid(raise_exception=True)
        try:
            product_update(
                product=product, updated_by=request.user, category=correction.validated_data["category"]
            )
        except DjangoValidationError as error:
            raise field_errors(error) from None
        return Response(self.get_serializer(classification_products().get(pk=product.pk)).data)


@extend_schema_view(
    post=extend_schema(
        summary="Classify a product again",
        description=(
            "Needs `catalog.change_product`. Queues the photo for the active model; a category set by a "
            "person stays."
        ),
        parameters=[ID_OR_SLUG_PARAMETER],
        request=None,
        responses={202: ProductClassificationSerializer, **error_responses(401, 403, 404)},
    )
)
class ProductReclassifyView(generics.GenericAPIView):
    permission_classes = [ClassifyAgainPermission]
    pagination_class = None
    serializer_class = ProductClassificationSerializer

    def get_queryset(self) -> QuerySet[Product]:
        return classification_products()

    def post(self, request: Request, id_or_slug: str) -> Response:
        product = product_for_id_or_slug(products=self.get_queryset(), id_or_slug=id_or_slug)
        self.check_object_permissions(request, product)
        products_classify_again(products=[product])
        refreshed = classification_products().get(pk=product.pk)
        return Response(self.get_serializer(refreshed).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(
        summary="Active categories with their number of published products",
        responses={200: CategorySerializer(many=True), **error_responses(400, 401, 429)},
    )
)
class CategoryListView(ConditionalStorefrontReadMixin, generics.ListAPIView):
    permission_classes = [StorefrontReadsOpen]
    pagination_class = CatalogPagination
    serializer_class = CategorySerializer

    def get_queryset(self) -> QuerySet[Category]:
        return (
            Category.objects.filter(is_active=True)
            .annotate(product_count=Count("products", filter=Q(products__is_published=True)))
            .order_by("name", "pk")
        )
