"""The admin's "Import products": upload a CSV and a ZIP, read the preview, import in the background."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from catalog.admin.common import post_only
from catalog.import_files import COLUMNS_TEXT, PRICE_FORMAT_TEXT, ImportFileError
from catalog.models import ProductImport
from catalog.services.imports import (
    IMPORT_IN_PROGRESS,
    ProductImportError,
    product_import_cancel,
    product_import_preview,
    product_import_start,
    product_imports_delete,
)

# Importing creates and changes products, so it takes both permissions.
IMPORT_PERMISSIONS = ("catalog.add_product", "catalog.change_product")


class ProductImportForm(forms.Form):
    csv_file = forms.FileField(
        label="CSV of products",
        help_text=f"UTF-8 (with or without BOM); header names in any case: {COLUMNS_TEXT}. "
        f"Description and category are optional. Price: {PRICE_FORMAT_TEXT}.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )
    zip_file = forms.FileField(
        label="ZIP of photos",
        help_text="The photos the image column names, by their path in the ZIP or their file name alone.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )


def import_progress(*, job: ProductImport) -> dict:
    """What the job page shows and its polling reads."""
    total = job.total
    return {
        "status": job.status,
        "status_display": job.get_status_display(),
        "done": job.cursor,
        "total": total,
        "percent": round(100 * job.cursor / total) if total else 100,
        "created": job.created,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "failed": job.failed,
        "error": job.error,
        "finished": job.status not in (ProductImport.Status.PREVIEW, *IMPORT_IN_PROGRESS),
    }


@admin.register(ProductImport)
class ProductImportAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "progress_summary", "created", "updated", "failed", "created_at")
    list_filter = ("status",)
    change_list_template = "vitrine/product_import_change_list.html"
    change_form_template = "vitrine/product_import_change_form.html"
    fields = ("status", "csv_name", "zip_name", "created_by", "created_at", "started_at", "finished_at")
    readonly_fields = fields

    def _may_import(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.has_perms(IMPORT_PERMISSIONS)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may_import(request)

    def has_view_permission(self, request: HttpRequest, obj: ProductImport | None = None) -> bool:
        return self._may_import(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # An import starts from its upload page, which checks the files first.
        return False

    def has_change_permission(self, request: HttpRequest, obj: ProductImport | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ProductImport | None = None) -> bool:
        # A running import is cancelled, not deleted; deleting one removes its ZIP from storage too.
        return self._may_import(request) and (obj is None or obj.status not in IMPORT_IN_PROGRESS)

    def delete_model(self, request: HttpRequest, obj: ProductImport) -> None:
        product_imports_delete(imports=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProductImport]) -> None:
        try:
            product_imports_delete(imports=queryset)
        except ProductImportError as error:
            self.message_user(request, str(error), messages.ERROR)

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name="catalog_productimport_upload"),
            path("<int:import_id>/start/", wrap(self.start_view), name="catalog_productimport_start"),
            path("<int:import_id>/cancel/", wrap(self.cancel_view), name="catalog_productimport_cancel"),
            path(
                "<int:import_id>/progress.json",
                wrap(self.progress_view),
                name="catalog_productimport_progress",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="Rows done")
    def progress_summary(self, obj: ProductImport) -> str:
        return f"{obj.cursor}/{obj.total}"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if job is not None:
            context |= {"job": job, "progress": import_progress(job=job), "title": str(job)}
        return super().change_view(request, object_id, form_url, context)

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self._may_import(request):
            raise PermissionDenied
        form = ProductImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = product_import_preview(
                    csv_file=form.cleaned_data["csv_file"],
                    zip_file=form.cleaned_data["zip_file"],
                    created_by=request.user,
                )
            except ImportFileError as error:
                form.add_error(None, str(error))
            else:
                return HttpResponseRedirect(reverse("admin:catalog_productimport_change", args=[job.pk]))
        return TemplateResponse(
            request,
            "vitrine/product_import_upload.html",
            {
                **self.admin_site.each_context(request),
                "title": "Import products",
                "opts": self.model._meta,
                "form": form,
            },
        )

    def _changed(self, request: HttpRequest, import_id: int, change, done: str) -> HttpResponseRedirect:
        if not self._may_import(request):
            raise PermissionDenied
        job = get_object_or_404(ProductImport, pk=import_id)
        try:
            job = change(job)
        except ProductImportError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, done.format(job=job), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:catalog_productimport_change", args=[job.pk]))

    @post_only
    def start_view(self, request: HttpRequest, import_id: int) -> HttpResponseRedirect:
        return self._changed(
            request,
            import_id,
            lambda job: product_import_start(product_import=job),
            "Importing {job.total} product(s) in the background.",
        )

    @post_only
    def cancel_view(self, request: HttpRequest, import_id: int) -> HttpResponseRedirect:
        return self._changed(
            request,
            import_id,
            lambda job: product_import_cancel(product_import=job),
            "Import {job.pk} is cancelled; the rows saved so far stay.",
        )

    def progress_view(self, request: HttpRequest, import_id: int) -> JsonResponse:
        if not self._may_import(request):
            raise PermissionDenied
        return JsonResponse(import_progress(job=get_object_or_404(ProductImport, pk=import_id)))
