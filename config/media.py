"""Uploaded files served by Django itself: only with DEBUG (`make run`); in production Caddy serves /media/
with the same two headers (docker/Caddyfile)."""

from django.http import HttpRequest, HttpResponse
from django.views.static import serve

# An upload is only ever shown as an image: nothing it contains may run, load or frame anything.
MEDIA_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src 'self'; sandbox"


def media_file(request: HttpRequest, path: str, document_root: str) -> HttpResponse:
    response = serve(request, path, document_root=document_root)
    # The browser keeps the type the file's extension gave it; it never guesses HTML or script from the bytes.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = MEDIA_CONTENT_SECURITY_POLICY
    return response
