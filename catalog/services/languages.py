"""The one writer of a person's language preference (the admin's Language page)."""

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from catalog.models import LanguagePreference


class LanguageChoiceError(ValueError):
    pass


def user_language_set(*, user: AbstractBaseUser, language: str) -> LanguagePreference:
    """Stores the person's choice; an empty language means "follow my browser"."""
    codes = [code for code, _name in settings.LANGUAGES]
    if language and language not in codes:
        raise LanguageChoiceError(f"unknown language {language!r}: choose one of {', '.join(codes)}")
    preference, _created = LanguagePreference.objects.update_or_create(
        user=user, defaults={"language": language}
    )
    return preference
