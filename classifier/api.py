"""The classifier's part of the REST API: the trained model versions with their metrics, and the
storefront's similar products (by the active version's photo embeddings)."""

from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.api.caching import ConditionalStorefrontReadMixin
from catalog.api.pagination import CatalogPagination
from catalog.api.permissions import ModelPermissionsForReads, StorefrontReadsOpen
from catalog.api.schema import error_responses
from catalog.api.serializers import ProductSerializer
from catalog.api.views import ID_OR_SLUG_PARAMETER, product_for_id_or_slug, storefront_products
from catalog.models import Product
from classifier.models import ModelVersion
from classifier.services.similarity import NoSimilar, products_similar

SIMILAR_LIMIT_DEFAULT = 10
SIMILAR_LIMIT_MAX = 50


class ModelVersionSerializer(serializers.ModelSerializer):
    class_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    metrics = serializers.DictField(read_only=True, help_text="Evaluation figures recorded at training.")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "architecture",
            "class_names",
            "metrics",
            "threshold",
            "is_active",
            "activated_at",
            "created_at",
        ]
        read_only_fields = fields


@extend_schema_view(
    get=extend_schema(
        summary="Trained model versions with their metrics",
        description="Needs `classifier.view_modelversion`.",
        responses={200: ModelVersionSerializer(many=True), **error_responses(400, 401, 403)},
    )
)
class ModelVersionListView(generics.ListAPIView):
    permission_classes = [ModelPermissionsForReads]
    pagination_class = CatalogPagination
    serializer_class = ModelVersionSerializer

    def get_queryset(self) -> QuerySet[ModelVersion]:
        return ModelVersion.objects.order_by("-created_at", "-pk")


class SimilarProductSerializer(ProductSerializer):
    similarity = serializers.FloatField(read_only=True, help_text="Cosine similarity of the photos (0..1).")

    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "similarity"]
        read_only_fields = fields


class SimilarProductsSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(
        choices=[NoSimilar.NO_ACTIVE_MODEL, NoSimilar.NO_EMBEDDING],
        allow_null=True,
        read_only=True,
        help_text=(
            "null: `results` are the most similar published products. `no_active_model`: no model version "
            "is active. `no_embedding`: the active model has no embedding of this photo yet (not classified "
            "yet, or a model without one); `results` is then empty."
        ),
    )
    results = SimilarProductSerializer(many=True, read_only=True)


class SimilarLimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=SIMILAR_LIMIT_MAX, default=SIMILAR_LIMIT_DEFAULT)


@extend_schema_view(
    get=extend_schema(
        summary="Published products whose photos look most like this product's",
        description=(
            "Anyone may ask about a published product; callers with `catalog.view_product` also about "
            "unpublished ones. Results are always published products, the most similar first."
        ),
        parameters=[
            ID_OR_SLUG_PARAMETER,
            OpenApiParameter(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": SIMILAR_LIMIT_MAX,
                    "default": SIMILAR_LIMIT_DEFAULT,
                },
                description="How many products at most.",
            ),
        ],
        responses={200: SimilarProductsSerializer, **error_responses(400, 401, 404, 429)},
    )
)
class SimilarProductsView(ConditionalStorefrontReadMixin, generics.RetrieveAPIView):
    permission_classes = [StorefrontReadsOpen]
    pagination_class = None
    serializer_class = SimilarProductsSerializer

    def get_queryset(self) -> QuerySet[Product]:
        return storefront_products(include_unpublished=self.request.user.has_perm("catalog.view_product"))

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        limits = SimilarLimitSerializer(data=request.query_params)
        limits.is_valid(raise_exception=True)
        product = product_for_id_or_slug(products=self.get_queryset(), id_or_slug=self.kwargs["id_or_slug"])
        self.check_object_permissions(request, product)
        similar = products_similar(product=product, limit=limits.validated_data["limit"])
        found = storefront_products().in_bulk([product_id for product_id, _ in similar.matches])
        results = []
        # A product unpublished or deleted since the index was built is left out.
        for product_id, similarity in similar.matches:
            if product_id in found:
                found[product_id].similarity = round(similarity, 4)
                results.append(found[product_id])
        answer = {"reason": similar.reason, "results": results}
        return Response(self.get_serializer(answer).data)


app_name = "classifier-api"
urlpatterns = [
    path("model-versions/", ModelVersionListView.as_view(), name="model-version-list"),
    path("products/<str:id_or_slug>/similar/", SimilarProductsView.as_view(), name="product-similar"),
]
