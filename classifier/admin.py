"""The classifier's admin: model versions with their figures, activation and roll back, retraining with live
progress, bulk re-classification. Button texts and element ids are listed in .agents/ADMIN_UI.md."""

import mimetypes

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from classifier.models import BulkJob, ModelActivation, ModelVersion, TrainingRun
from classifier.selectors import (
    JOB_IN_PROGRESS,
    RUN_IN_PROGRESS,
    base_dataset_choices,
    bulk_job_progress,
    model_version_artifact_file,
    model_version_report,
    model_version_roll_back_target,
    model_versions_compare,
    training_run_progress,
)
from classifier.services import (
    BulkJobError,
    ModelVersionError,
    TrainingRunError,
    bulk_job_create,
    model_version_activate,
    model_version_roll_back,
    model_version_threshold,
    training_recipe_default,
    training_run_cancel,
    training_run_create,
)

# Views that change data answer POST only; a link or a prefetch must not start or switch anything.
post_only = method_decorator(require_POST)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _roll_back_context() -> dict:
    return {"roll_back_target": model_version_roll_back_target()}


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
    actions = ["activate", "compare_versions"]
    change_form_template = "vitrine/model_version_change_form.html"
    change_list_template = "vitrine/model_version_change_list.html"
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
        # Versions come from training (the retrain button, manage.py train / bootstrap_model).
        return False

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

    @admin.display(description="Test accuracy")
    def test_accuracy(self, obj: ModelVersion) -> str:
        return _percent((obj.metrics or {}).get("test_accuracy"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {**_roll_back_context(), **(extra_context or {})})

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        model_version = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if model_version is not None:
            context |= {
                "report": model_version_report(model_version=model_version),
                "model_version": model_version,
                "threshold_in_use": _percent(model_version_threshold(model_version=model_version)),
                "activations": model_version.activations.select_related("previous", "activated_by")[:10],
                **_roll_back_context(),
            }
        return super().change_view(request, object_id, form_url, context)

    def _may_switch(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    @admin.action(description="Activate the selected model version (workers switch at their next product)")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to activate.", messages.ERROR)
            return
        self._activate(request, queryset.get())

    def _activate(self, request: HttpRequest, model_version: ModelVersion) -> None:
        try:
            model_version = model_version_activate(model_version=model_version, activated_by=request.user)
        except ModelVersionError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(request, f"{model_version.name} is now the active model version.", messages.SUCCESS)

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
            request, f"Rolled back: {model_version.name} is the active model version again.", messages.SUCCESS
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

    @admin.action(description="Compare the two selected versions")
    def compare_versions(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponseRedirect | None:
        ids = sorted(queryset.values_list("pk", flat=True))
        if len(ids) != 2:
            self.message_user(request, "Select exactly two model versions to compare.", messages.ERROR)
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
            self.message_user(request, "Choose two existing model versions to compare.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:classifier_modelversion_changelist"))
        return TemplateResponse(
            request,
            "vitrine/model_version_compare.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Compare {chosen[0].name} and {chosen[1].name}",
                "opts": self.model._meta,
                "versions": chosen,
                "figures": model_versions_compare(model_versions=chosen),
            },
        )


class RetrainForm(forms.Form):
    architecture = forms.ChoiceField(help_text="The network trained on the shop's photos.")
    epochs = forms.IntegerField(
        min_value=1, max_value=10_000, required=False, help_text="Empty: the architecture's own number."
    )
    image_size = forms.IntegerField(
        min_value=8, max_value=1024, help_text="Side in pixels of the square photos the model looks at."
    )
    base_dataset = forms.ChoiceField(
        required=False,
        label="Base data set",
        help_text="Photos from a labelled folder added to the shop's reviewed products (optional).",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Imported when the form is shown: the list of networks lives with the Keras code.
        from classifier.ml.architectures import ARCHITECTURES

        self.fields["architecture"].choices = [(name, name) for name in ARCHITECTURES]
        self.fields["base_dataset"].choices = [("", "None: the shop's reviewed products only")] + [
            (name, name) for name in base_dataset_choices()
        ]


class WorkerWrittenAdmin(admin.ModelAdmin):
    """Rows a worker writes (training runs, bulk jobs): started by their buttons, never edited by hand."""

    in_progress_statuses: tuple[str, ...] = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        # They start from "Retrain now" / "Re-classify", which send them to a queue.
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        # A row a worker may be writing to is cancelled, not deleted.
        in_progress = obj is not None and obj.status in self.in_progress_statuses
        return not in_progress and super().has_delete_permission(request, obj)


@admin.register(TrainingRun)
class TrainingRunAdmin(WorkerWrittenAdmin):
    list_display = ("__str__", "status", "progress_summary", "model_version", "created_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("model_version",)
    change_list_template = "vitrine/training_run_change_list.html"
    change_form_template = "vitrine/training_run_change_form.html"
    readonly_fields = (
        "status",
        "params",
        "progress",
        "message",
        "data_fingerprint",
        "error",
        "model_version",
        "worker",
        "created_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    )
    fields = readonly_fields

    in_progress_statuses = RUN_IN_PROGRESS

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("retrain/", wrap(self.retrain_view), name="classifier_trainingrun_retrain"),
            path(
                "<int:run_id>/progress.json", wrap(self.progress_view), name="classifier_trainingrun_progress"
            ),
            path("<int:run_id>/cancel/", wrap(self.cancel_view), name="classifier_trainingrun_cancel"),
            *super().get_urls(),
        ]

    @admin.display(description="Progress")
    def progress_summary(self, obj: TrainingRun) -> str:
        progress = obj.progress or {}
        if "epoch" not in progress:
            return "-"
        return f"epoch {progress['epoch']}/{progress.get('epochs', '?')}"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if run is not None:
            context |= {"run": run, "run_progress": training_run_progress(run=run)}
        return super().change_view(request, object_id, form_url, context)

    def _may_train(self, request: HttpRequest) -> None:
        if not request.user.has_perm("classifier.add_trainingrun"):
            raise PermissionDenied

    def retrain_view(self, request: HttpRequest) -> HttpResponse:
        self._may_train(request)
        defaults = training_recipe_default()
        if request.method == "POST":
            one_click = request.POST.get("use_defaults") == "1"
            form = RetrainForm(
                {**defaults, "epochs": defaults["epochs"] or ""} if one_click else request.POST
            )
            if form.is_valid():
                try:
                    run = training_run_create(**form.cleaned_data, created_by=request.user)
                except TrainingRunError as error:
                    self.message_user(request, str(error), messages.ERROR)
                    if one_click:
                        return HttpResponseRedirect(reverse("admin:classifier_trainingrun_changelist"))
                else:
                    self.message_user(request, f"Training run {run.pk} is queued.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:classifier_trainingrun_change", args=[run.pk]))
        else:
            form = RetrainForm(initial=defaults)
        return TemplateResponse(
            request,
            "vitrine/retrain_form.html",
            {
                **self.admin_site.each_context(request),
                "title": "Retrain on the reviewed products",
                "opts": self.model._meta,
                "form": form,
            },
        )

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        run = get_object_or_404(TrainingRun.objects.select_related("model_version"), pk=run_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        progress = training_run_progress(run=run)
        if run.model_version_id:
            progress["model_version_url"] = reverse(
                "admin:classifier_modelversion_change", args=[run.model_version_id]
            )
        return JsonResponse(progress)

    @post_only
    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponseRedirect:
        if not request.user.has_perm("classifier.change_trainingrun"):
            raise PermissionDenied
        run = get_object_or_404(TrainingRun, pk=run_id)
        try:
            run = training_run_cancel(run=run)
        except TrainingRunError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            words = (
                "cancelled" if run.status == TrainingRun.Status.CANCELLED else "stops within a second or two"
            )
            self.message_user(request, f"Training run {run.pk} {words}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:classifier_trainingrun_change", args=[run.pk]))


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


@admin.register(BulkJob)
class BulkJobAdmin(WorkerWrittenAdmin):
    list_display = ("__str__", "status", "progress_summary", "failed", "created_at", "finished_at")
    list_filter = ("status",)
    change_list_template = "vitrine/bulk_job_change_list.html"
    change_form_template = "vitrine/bulk_job_change_form.html"
    fields = (
        "status",
        "total",
        "done",
        "failed",
        "cursor",
        "chunk_size",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    )
    readonly_fields = fields

    in_progress_statuses = JOB_IN_PROGRESS

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("start-all/", wrap(self.start_all_view), name="classifier_bulkjob_start_all"),
            path("<int:job_id>/progress.json", wrap(self.progress_view), name="classifier_bulkjob_progress"),
            *super().get_urls(),
        ]

    @admin.display(description="Progress")
    def progress_summary(self, obj: BulkJob) -> str:
        return f"{obj.done}/{obj.total}"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None:
            context |= {"job": job, "job_progress": bulk_job_progress(job=job)}
        return super().change_view(request, object_id, form_url, context)

    @post_only
    def start_all_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if not request.user.has_perm("classifier.add_bulkjob"):
            raise PermissionDenied
        try:
            job = bulk_job_create(products=None, created_by=request.user)
        except BulkJobError as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:classifier_bulkjob_changelist"))
        self.message_user(
            request, f"Re-classifying {job.total} product(s) in the background.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:classifier_bulkjob_change", args=[job.pk]))

    def progress_view(self, request: HttpRequest, job_id: int) -> JsonResponse:
        job = get_object_or_404(BulkJob, pk=job_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return JsonResponse(bulk_job_progress(job=job))
