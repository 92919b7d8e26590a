"""OpenAPI details DRF cannot infer: which reads are open to anonymous clients, and the error bodies."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS

from catalog.api.permissions import StorefrontReadsOpen


class ErrorDetailSerializer(serializers.Serializer):
    """An error that concerns the whole request."""

    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """Messages by field name ("non_field_errors": the whole body; "detail": a body that cannot be parsed)."""


class FieldErrorsExtension(OpenApiSerializerExtension):
    """DRF's field errors are a map with one key per bad field, which no fixed serializer can describe."""

    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict:
        return {
            "type": "object",
            "description": FieldErrorsSerializer.__doc__,
            "additionalProperties": {
                "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
            },
        }


ERROR_DESCRIPTIONS = {
    400: "Invalid input: messages by field name. Nothing was stored.",
    401: "No valid credentials (send `Authorization: Token <key>`).",
    403: "Signed in, but without the permission this operation needs.",
    404: "No such product visible to you.",
    415: "Request body in a content type this operation does not accept.",
    429: "Too many requests from this anonymous client; retry after the time in `Retry-After`.",
}


def error_responses(*status_codes: int) -> dict[int, OpenApiResponse]:
    """The documented error answers of one operation, each with its body schema."""
    return {
        code: OpenApiResponse(
            response=FieldErrorsSerializer if code == 400 else ErrorDetailSerializer,
            description=ERROR_DESCRIPTIONS[code],
        )
        for code in status_codes
    }


class CatalogAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, told that StorefrontReadsOpen lets anonymous clients read."""

    def get_auth(self) -> list[dict]:
        auths = super().get_auth()
        anonymous_read = self.method in SAFE_METHODS and any(
            isinstance(permission, StorefrontReadsOpen) for permission in self.view.get_permissions()
        )
        if anonymous_read and {} not in auths:
            auths.append({})
        return auths
