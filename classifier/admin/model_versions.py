"""Model versions in the admin: their figures, compare, activate and roll back, the activation history."""

import mimetypes

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from catalog.admin.common import post_only
from classifier.admin.display import model_versions_compare, percent, report_headline, report_threshold_text
from classifier.models import ModelActivation, ModelVersion
from classifier.selectors import (
    model_version_artifact_file,
    model_version_report,
    model_version_roll_back_target,
)
from classifier.services.model_versions import (
    ModelVersionError,
    model_version_activate,
    model_version_roll_back,
    model_version_threshold,
)


def _roll_back_context() -> dict:
    return {"roll_back_target": model_version_roll_back_target()}


def _class_threshold_rows(model_version: ModelVersion) -> dict:
    """The per-category thresholds picked on the version's held-out photos, as the change page shows them."""
    metrics = model_version.metrics or {}
    per_class = metrics.get("class_thresholds") or {}
    rows = [
        {
            "name": name,
            "threshold": percent(entry["threshold"]),
            "own": entry["own"],
            "coverage": percent(entry["coverage"]),
            "precision": percent(entry["precision"]),
            "predicted": entry["predicted"],
        }
        for name, entry in per_class.items()
    ]
    return {
        "class_thresholds": rows,
        "class_threshold_coverage": percent(metrics.get("class_threshold_coverage")),
        "class_threshold_precision": percent(metrics.get("class_threshold_precision")),
    }


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
    actions = ["activate", "compare_versions", "delete_selected"]
    change_form_template = "vitrine/model_version_change_form.html"
    change_list_template = "vitrine/model_version_change_list.html"
    fields = (
        "name",
        "architecture",
        "threshold",
        "per_class_thresholds",
        "is_active",
        "activated_at",
        "artifact_path",
        "model_sha256",
        "data_fingerprint",
        "class_names",
        "metrics",
        "created_at",
    )
    # Files on disk and their hashes are facts of training; the name and thresholds are a person's call.
    readonly_fields = tuple(
        field for field in fields if field not in ("name", "threshold", "per_class_thresholds")
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Versions come from training (the retrain button, manage.py train / bootstrap_model).
        return False

    def _refuse_deleting_active(self, request: HttpRequest, model_version: ModelVersion) -> None:
        self.message_user(
            request,
            gettext(
                "%(version)s is the active model version and cannot be deleted: its activation history "
                "would go with it and classification would stop. Activate another version first."
            )
            % {"version": model_version.name},
            messages.ERROR,
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        model_version = self.get_object(request, object_id)
        if model_version is not None and model_version.is_active:
            self._refuse_deleting_active(request, model_version)
            change_url = reverse("admin:classifier_modelversion_change", args=[model_version.pk])
            return HttpResponseRedirect(change_url)
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description=delete_selected.short_description, permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        active = queryset.filter(is_active=True).first()
        if active is not None:
            self._refuse_deleting_active(request, active)
            return None
        return delete_selected(self, request, queryset)

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("compare/", wrap(self.compare_view), name="classifier_modelversion_compare"),
            path("roll-back/", wrap(self.roll_back_view), name="classifier_modelversion_roll_back"),
            path(
                "<int:version_id>/activate/",
                wrap(self.activate_view),
                name="classifier_modelversion_activate",
            ),
            path(
                "<int:version_id>/artifact/<str:file_name>",
                wrap(self.artifact_view),
                name="classifier_modelversion_artifact",
            ),
            *super().get_urls(),
        ]

    @admin.display(description=_("Test accuracy"))
    def test_accuracy(self, obj: ModelVersion) -> str:
        return percent((obj.metrics or {}).get("test_accuracy"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {**_roll_back_context(), **(extra_context or {})})

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        model_version = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if model_version is not None:
            report = model_version_report(model_version=model_version)
            context |= {
                "report": report,
                "headline": report_headline(report),
                "threshold_text": report_threshold_text(report),
                "ood_keep_rate": percent(report.ood.get("keep_rate")),
                "kind_keep_rate": percent(report.ood.get("kind_keep_rate")),
                "model_version": model_version,
                "threshold_in_use": percent(model_version_threshold(model_version=model_version)),
                **_class_threshold_rows(model_version),
                "activations": model_version.activations.select_related("previous", "activated_by")[:10],
                **_roll_back_context(),
            }
        return super().change_view(request, object_id, form_url, context)

    def _may_switch(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    @admin.action(
        description=_("Activate the selected model version (workers switch at their next product)"),
        permissions=["change"],
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(
                request, gettext("Select exactly one model version to activate."), messages.ERROR
            )
            return
        self._activate(request, queryset.get())

    def _activate(self, request: HttpRequest, model_version: ModelVersion) -> None:
        try:
            model_version = model_version_activate(model_version=model_version, activated_by=request.user)
        except ModelVersionError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(
            request,
            gettext("%(version)s is now the active model version.") % {"version": model_version.name},
            messages.SUCCESS,
        )

    @post_only
    def activate_view(self, request: HttpRequest, version_id: int) -> HttpResponseRedirect:
        self._may_switch(request)
        model_version = get_object_or_404(ModelVersion, pk=version_id)
        self._activate(request, model_version)
        return HttpResponseRedirect(reverse("admin:classifier_modelversion_change", args=[model_version.pk]))

    @post_only
    def roll_back_view(self, request: HttpRequest) -> HttpResponseRedirect:
        self._may_switch(request)
        try:
            model_version = model_version_roll_back(activated_by=request.user)
        except ModelVersionError as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:classifier_modelversion_changelist"))
        self.message_user(
            request,
            gettext("Rolled back: %(version)s is the active model version again.")
            % {"version": model_version.name},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:classifier_modelversion_change", args=[model_version.pk]))

    def artifact_view(self, request: HttpRequest, version_id: int, file_name: str) -> FileResponse:
        """A picture or table from the version's evaluation; nothing outside its folder, never the model."""
        model_version = get_object_or_404(ModelVersion, pk=version_id)
        if not self.has_view_permission(request, model_version):
            raise PermissionDenied
        file_path = model_version_artifact_file(model_version=model_version, name=file_name)
        if file_path is None:
            raise Http404(f"{model_version.name} has no file {file_name}")
        content_type = mimetypes.guess_type(file_path.name)[0] or "application/octet-stream"
        return FileResponse(file_path.open("rb"), content_type=content_type)

    @admin.action(description=_("Compare the two selected versions"), permissions=["view"])
    def compare_versions(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponseRedirect | None:
        ids = sorted(queryset.values_list("pk", flat=True))
        if len(ids) != 2:
            self.message_user(
                request, gettext("Select exactly two model versions to compare."), messages.ERROR
            )
            return None
        url = reverse("admin:classifier_modelversion_compare")
        return HttpResponseRedirect(f"{url}?versions={ids[0]},{ids[1]}")

    def compare_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        ids = [part for part in request.GET.get("versions", "").split(",") if part.isdigit()]
        versions = {version.pk: version for version in ModelVersion.objects.filter(pk__in=ids)}
        chosen = [versions[int(pk)] for pk in dict.fromkeys(ids) if int(pk) in versions]
        if len(chosen) != 2:
            self.message_user(
                request, gettext("Choose two existing model versions to compare."), messages.ERROR
            )
            return HttpResponseRedirect(reverse("admin:classifier_modelversion_changelist"))
        return TemplateResponse(
            request,
            "vitrine/model_version_compare.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Compare %(first)s and %(second)s")
                % {"first": chosen[0].name, "second": chosen[1].name},
                "opts": self.model._meta,
                "versions": chosen,
                "figures": model_versions_compare(model_versions=chosen),
            },
        )


@admin.register(ModelActivation)
class ModelActivationAdmin(admin.ModelAdmin):
    """Which version was active when: the history a roll back goes back along."""

    list_display = ("activated_at", "model_version", "previous", "is_roll_back", "activated_by")
    list_select_related = ("model_version", "previous", "activated_by")
    fields = list_display

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False
