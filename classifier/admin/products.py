"""The catalog's product admin with the classifier's action added: re-classify in a background job.

The catalog knows nothing of bulk jobs; the classifier registers its own subclass of the product admin.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from catalog.admin.products import ProductAdmin
from catalog.models import Product
from classifier.services.bulk import BulkJobError, bulk_job_create

admin.site.unregister(Product)


@admin.register(Product)
class ClassifiedProductAdmin(ProductAdmin):
    actions = [*ProductAdmin.actions, "reclassify_in_background"]

    def has_bulk_job_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("classifier.add_bulkjob")

    @admin.action(
        description=_("Re-classify the selected products with the active model (background job)"),
        permissions=["bulk_job"],
    )
    def reclassify_in_background(
        self, request: HttpRequest, queryset: QuerySet[Product]
    ) -> HttpResponseRedirect | None:
        try:
            job = bulk_job_create(products=queryset, created_by=request.user)
        except BulkJobError as error:
            self.message_user(request, str(error), messages.ERROR)
            return None
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
