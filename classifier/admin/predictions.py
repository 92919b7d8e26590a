"""Every prediction kept: what each model version said about each photo, newest first (read only)."""

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from classifier.admin.display import percent
from classifier.models import Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("product", "label", "confidence_percent", "model_version", "created_at")
    list_filter = ("model_version",)
    list_select_related = ("product", "model_version")
    search_fields = ("product__name", "product__sku", "label")
    fields = ("product", "model_version", "image_sha256", "label", "confidence", "top", "created_at")
    readonly_fields = fields

    @admin.display(description=_("Confidence"), ordering="confidence")
    def confidence_percent(self, obj: Prediction) -> str:
        return percent(obj.confidence)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Workers record predictions; a person files products in the catalog instead.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Prediction | None = None) -> bool:
        return False
