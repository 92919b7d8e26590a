"""The admin's Language page: a person picks the language of their pages, or follows their browser."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from catalog.selectors import user_language_get
from catalog.services.languages import user_language_set


class LanguageForm(forms.Form):
    language = forms.ChoiceField(
        label=_("Language"),
        required=False,
        help_text=_("Your choice is kept with your account, on every device you sign in from."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["language"].choices = [("", gettext("The language of my browser")), *settings.LANGUAGES]


def language_view(request: HttpRequest) -> HttpResponse:
    form = LanguageForm(request.POST or None, initial={"language": user_language_get(user=request.user)})
    if request.method == "POST" and form.is_valid():
        language = form.cleaned_data["language"]
        user_language_set(user=request.user, language=language)
        # The confirmation is already in the language chosen; "browser" keeps this request's.
        if language:
            translation.activate(language)
        messages.success(request, gettext("Your language preference is saved."))
        return HttpResponseRedirect(reverse("admin-language"))
    context = {**admin.site.each_context(request), "title": gettext("Language"), "form": form}
    return TemplateResponse(request, "vitrine/language_form.html", context)
