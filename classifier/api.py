"""The classifier's part of the REST API: the trained model versions with their metrics."""

from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers

from catalog.api.pagination import CatalogPagination
from catalog.api.permissions import ModelPermissionsForReads
from catalog.api.schema import error_responses
from classifier.models import ModelVersion


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


app_name = "classifier-api"
urlpatterns = [path("model-versions/", ModelVersionListView.as_view(), name="model-version-list")]
