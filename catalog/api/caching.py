"""Conditional GET and the shared page cache for the storefront's public reads.

Every 200 answer carries an ETag (a hash of its bytes) and, where the view knows when its data last changed,
Last-Modified; a caller that already holds it gets 304. Anonymous JSON answers are kept in the "storefront"
cache under the catalog generation and the absolute URL (host and scheme are in the links the page holds),
read before the database is, so a page built from rows that changed meanwhile is stored under a generation
nobody asks for any more. Signed-in callers may see more (unpublished products): they bypass the cache.
"""

import hashlib
from datetime import datetime
from typing import NamedTuple

from django.http import HttpResponse, HttpResponseBase
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.http import http_date
from rest_framework.request import Request

from catalog.storefront_cache import catalog_generation, storefront_page_get, storefront_page_set

# Headers an answer depends on besides the URL: the format asked for, and who asks.
STOREFRONT_VARY = ("Accept", "Authorization", "Cookie")
# HTTP dates count whole seconds: a date is given only once its second, and one more for other machines'
# clocks, have passed, or a change later in that second would share it and be answered 304.
LAST_MODIFIED_SETTLED_S = 2


class StorefrontPage(NamedTuple):
    """Kept as a plain tuple: a page cached by another release of this code still reads back."""

    content: bytes
    content_type: str
    etag: str
    last_modified: datetime | None


def _etag(content: bytes) -> str:
    return f'"{hashlib.blake2b(content, digest_size=16).hexdigest()}"'


def _page_key(*, generation: str, request: Request) -> str:
    address = f"{request.accepted_media_type} {request.build_absolute_uri()}"
    return f"page:{generation}:{hashlib.sha256(address.encode()).hexdigest()}"


class ConditionalStorefrontReadMixin:
    """For the GET views of catalog.api.views that anyone may call. A view sets `self.last_modified` while
    building its answer when one time says when everything in it last changed."""

    last_modified: datetime | None = None
    _page_key: str | None = None

    def _cacheable(self, request: Request) -> bool:
        return (
            request.method in ("GET", "HEAD")
            and not request.user.is_authenticated
            and request.accepted_renderer.format == "json"
        )

    def get(self, request: Request, *args, **kwargs) -> HttpResponseBase:
        if self._cacheable(request):
            generation = catalog_generation()
            if generation is not None:
                self._page_key = _page_key(generation=generation, request=request)
                page = storefront_page_get(key=self._page_key)
                if isinstance(page, tuple) and len(page) == len(StorefrontPage._fields):
                    return self._page_response(StorefrontPage(*page))
        return super().get(request, *args, **kwargs)

    def _page_response(self, page: StorefrontPage) -> HttpResponse:
        response = HttpResponse(page.content, content_type=page.content_type)
        response["ETag"] = page.etag
        self.last_modified = page.last_modified
        return response

    def finalize_response(self, request: Request, response: HttpResponseBase, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method not in ("GET", "HEAD") or response.status_code != 200:
            return response
        if not response.has_header("ETag"):
            content = response.render().content
            response["ETag"] = _etag(content)
            if self._page_key is not None:
                page = StorefrontPage(content, response["Content-Type"], response["ETag"], self.last_modified)
                storefront_page_set(key=self._page_key, page=tuple(page))
        patch_vary_headers(response, STOREFRONT_VARY)
        if request.user.is_authenticated:
            patch_cache_control(response, private=True, no_cache=True)
        else:
            patch_cache_control(response, no_cache=True)
        last_modified = self._settled_last_modified()
        if last_modified is not None:
            response["Last-Modified"] = http_date(last_modified)
        return get_conditional_response(
            request, etag=response["ETag"], last_modified=last_modified, response=response
        )

    def _settled_last_modified(self) -> int | None:
        """Last-Modified in whole seconds, once settled; the ETag alone answers until then."""
        if self.last_modified is None:
            return None
        seconds = int(self.last_modified.timestamp())
        return seconds if timezone.now().timestamp() >= seconds + LAST_MODIFIED_SETTLED_S else None
