"""Uploaded files served by Django itself: only with DEBUG (`make run`); in production Caddy serves /media/
with the same two headers (docker/Caddyfile), and both hide the kept originals."""

import posixpath

from django.http import Http404, HttpRequest, HttpResponse
from django.views.static import serve

from catalog.photos import ORIGINALS_PREFIX

# An upload is only ever shown as an image: nothing it contains may run, load or frame anything.
MEDIA_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src 'self'; sandbox"


def media_file(request: HttpRequest, path: str, document_root: str) -> HttpResponse:
    # Kept originals (EXIF and GPS included) are private: as missing here as behind Caddy.
    if f"{posixpath.normpath(path).lstrip('/')}/".startswith(ORIGINALS_PREFIX):
        raise Http404("No such file.")
    response = serve(request, path, document_root=document_root)
    # The browser keeps the type the file's extension gave it; it never guesses HTML or script from the bytes.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = MEDIA_CONTENT_SECURITY_POLICY
    return response
