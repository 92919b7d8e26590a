"""The admin's webhook pages: the storefront's subscriptions, and every delivery with its attempts and
answer."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from catalog.models import WebhookDelivery, WebhookEndpoint
from catalog.services.webhooks import webhook_deliveries_send_again


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(
        label=_("URL"), max_length=500, assume_scheme="https", help_text=_("Receives a POST for each event.")
    )
    events = forms.MultipleChoiceField(
        choices=WebhookEndpoint.Event.choices,
        widget=forms.CheckboxSelectMultiple,
        label=_("Events"),
        help_text=_("The events this URL is told about."),
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "events", "is_active"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("name", "url", "event_names", "is_active", "created_at")
    list_filter = ("is_active",)
    readonly_fields = ("secret", "created_at")

    def get_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> list[str]:
        # The secret exists once the subscription is saved; the receiver needs it to check signatures.
        fields = ["name", "url", "events", "is_active"]
        return fields if obj is None else [*fields, "secret", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> tuple:
        return self.readonly_fields if obj is not None else ()

    @admin.display(description=_("Events"))
    def event_names(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event", "endpoint")
    list_select_related = ("endpoint",)
    actions = ["send_again"]
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Send the selected deliveries again now"), permissions=["change"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = webhook_deliveries_send_again(deliveries=list(queryset))
        message = ngettext(
            "%(count)d delivery will be sent again now.",
            "%(count)d deliveries will be sent again now.",
            count,
        )
        self.message_user(request, message % {"count": count}, messages.SUCCESS)
