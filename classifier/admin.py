from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from classifier.models import ModelVersion, TrainingRun
from classifier.services import ModelVersionError, model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "architecture",
        "test_accuracy",
        "threshold",
        "is_active",
        "activated_at",
        "created_at",
    )
    list_filter = ("is_active", "architecture")
    search_fields = ("name",)
    actions = ["activate"]
    fields = (
        "name",
        "architecture",
        "threshold",
        "is_active",
        "activated_at",
        "artifact_path",
        "model_sha256",
        "data_fingerprint",
        "class_names",
        "metrics",
        "created_at",
    )
    # Files on disk and their hashes are facts of training; only the name and threshold are a person's call.
    readonly_fields = (
        "architecture",
        "is_active",
        "activated_at",
        "artifact_path",
        "model_sha256",
        "data_fingerprint",
        "class_names",
        "metrics",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Versions come from training (manage.py train / bootstrap_model), which writes their files.
        return False

    @admin.display(description="Test accuracy")
    def test_accuracy(self, obj: ModelVersion) -> str:
        accuracy = (obj.metrics or {}).get("test_accuracy")
        return "-" if accuracy is None else f"{accuracy:.1%}"

    @admin.action(description="Activate the selected model version (workers switch at their next product)")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to activate.", messages.ERROR)
            return
        try:
            model_version = model_version_activate(model_version=queryset.get())
        except ModelVersionError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(request, f"{model_version.name} is now the active model version.", messages.SUCCESS)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "progress_summary", "model_version", "created_at", "finished_at")
    list_filter = ("status",)
    readonly_fields = (
        "status",
        "params",
        "progress",
        "data_fingerprint",
        "error",
        "model_version",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Progress")
    def progress_summary(self, obj: TrainingRun) -> str:
        progress = obj.progress or {}
        if "epoch" not in progress:
            return "-"
        return f"epoch {progress['epoch']}/{progress.get('epochs', '?')}"
