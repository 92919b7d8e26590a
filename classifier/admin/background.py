"""Background work in the admin: retraining with live progress and cancel, bulk re-classification."""

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from catalog.admin.common import post_only
from classifier.admin.display import bulk_job_progress, training_run_progress
from classifier.ml.formats import ARCHITECTURE_EPOCHS
from classifier.models import BulkJob, TrainingRun
from classifier.selectors import JOB_IN_PROGRESS, RUN_IN_PROGRESS, base_dataset_choices
from classifier.services.bulk import BulkJobError, bulk_job_cancel, bulk_job_create, bulk_job_resume
from classifier.services.training import (
    TrainingRunError,
    training_recipe_default,
    training_run_cancel,
    training_run_create,
    training_run_create_quick,
)


class RetrainForm(forms.Form):
    architecture = forms.ChoiceField(
        label=_("Architecture"), help_text=_("The network trained on the shop's photos.")
    )
    epochs = forms.IntegerField(
        min_value=1,
        max_value=10_000,
        required=False,
        label=_("Epochs"),
        help_text=_("Empty: the architecture's own number."),
    )
    image_size = forms.IntegerField(
        min_value=8,
        max_value=1024,
        label=_("Image size"),
        help_text=_("Side in pixels of the square photos the model looks at."),
    )
    base_dataset = forms.ChoiceField(
        required=False,
        label=_("Base data set"),
        help_text=_("Photos from a labelled folder added to the shop's reviewed products (optional)."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["architecture"].choices = [(name, name) for name in ARCHITECTURE_EPOCHS]
        self.fields["base_dataset"].choices = [("", gettext("None: the shop's reviewed products only"))] + [
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

    @admin.display(description=_("Progress"))
    def progress_summary(self, obj: TrainingRun) -> str:
        progress = obj.progress or {}
        if "epoch" not in progress:
            return "-"
        return gettext("epoch %(epoch)s/%(epochs)s") % {
            "epoch": progress["epoch"],
            "epochs": progress.get("epochs", "?"),
        }

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
        if request.method == "POST" and request.POST.get("kind") == "quick":
            try:
                run = training_run_create_quick(created_by=request.user)
            except TrainingRunError as error:
                self.message_user(request, str(error), messages.ERROR)
                return HttpResponseRedirect(reverse("admin:classifier_trainingrun_changelist"))
            self.message_user(
                request,
                gettext("Quick retrain %(run)s is queued.") % {"run": run.pk},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:classifier_trainingrun_change", args=[run.pk]))
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
                    self.message_user(
                        request,
                        gettext("Training run %(run)s is queued.") % {"run": run.pk},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(reverse("admin:classifier_trainingrun_change", args=[run.pk]))
        else:
            form = RetrainForm(initial=defaults)
        return TemplateResponse(
            request,
            "vitrine/retrain_form.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Retrain on the reviewed products"),
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
            if run.status == TrainingRun.Status.CANCELLED:
                message = gettext("Training run %(run)s cancelled.")
            else:
                message = gettext("Training run %(run)s stops within a second or two.")
            self.message_user(request, message % {"run": run.pk}, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:classifier_trainingrun_change", args=[run.pk]))


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
        "chunk_attempts",
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
            path("<int:job_id>/cancel/", wrap(self.cancel_view), name="classifier_bulkjob_cancel"),
            path("<int:job_id>/resume/", wrap(self.resume_view), name="classifier_bulkjob_resume"),
            *super().get_urls(),
        ]

    @admin.display(description=_("Progress"))
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
            request,
            ngettext(
                "Re-classifying %(count)d product in the background.",
                "Re-classifying %(count)d products in the background.",
                job.total,
            )
            % {"count": job.total},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:classifier_bulkjob_change", args=[job.pk]))

    def progress_view(self, request: HttpRequest, job_id: int) -> JsonResponse:
        job = get_object_or_404(BulkJob, pk=job_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return JsonResponse(bulk_job_progress(job=job))

    def _changed(
        self, request: HttpRequest, job_id: int, change: Callable[[BulkJob], BulkJob], done: str
    ) -> HttpResponseRedirect:
        if not request.user.has_perm("classifier.change_bulkjob"):
            raise PermissionDenied
        job = get_object_or_404(BulkJob, pk=job_id)
        try:
            job = change(job)
        except BulkJobError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, done % {"job": job.pk}, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:classifier_bulkjob_change", args=[job.pk]))

    @post_only
    def cancel_view(self, request: HttpRequest, job_id: int) -> HttpResponseRedirect:
        done = gettext("Re-classification %(job)s is cancelled: no further chunk is sent.")
        return self._changed(request, job_id, lambda job: bulk_job_cancel(job=job), done)

    @post_only
    def resume_view(self, request: HttpRequest, job_id: int) -> HttpResponseRedirect:
        done = gettext("Re-classification %(job)s goes on from where it stopped.")
        return self._changed(request, job_id, lambda job: bulk_job_resume(job=job), done)
