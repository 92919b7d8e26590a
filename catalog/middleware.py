"""The language of a signed-in person's pages: their own choice, over what the browser asks for."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from catalog.selectors import user_language_get


class UserLanguageMiddleware:
    """Runs after LocaleMiddleware (Accept-Language, else English) and authentication: a language the person
    chose on the admin's Language page replaces the browser's."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Without a session cookie nobody is signed in: anonymous answers stay free of session reads.
        if settings.SESSION_COOKIE_NAME in request.COOKIES and request.user.is_authenticated:
            language = user_language_get(user=request.user)
            if language:
                translation.activate(language)
                request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)
