"""The pt-BR catalog that ships with the project: every message translated, and the .mo the .po compiles to.

Compiled with Babel (pure Python), so CI needs no gettext tools; compared as catalogs, not bytes, so a .mo
made by msgfmt (`manage.py compilemessages`) or by Babel passes alike.
"""

import gettext
import re
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.conf import settings

CATALOGS = sorted(Path(path) for locale in settings.LOCALE_PATHS for path in Path(locale).glob("*/*/*.po"))


def _read(po: Path):
    with po.open("rb") as source:
        return read_po(source)


def test_there_is_a_pt_br_catalog():
    assert [po.relative_to(settings.BASE_DIR).as_posix() for po in CATALOGS] == [
        "config/locale/pt_BR/LC_MESSAGES/django.po"
    ]


@pytest.mark.parametrize("po", CATALOGS, ids=lambda po: po.parent.parent.name)
def test_every_message_has_a_translation_that_is_not_fuzzy(po: Path):
    catalog = _read(po)
    assert len(catalog) > 100
    untranslated = [
        message.id
        for message in catalog
        if message.id
        and (
            message.fuzzy
            or not all(message.string if isinstance(message.string, tuple) else [message.string])
        )
    ]
    assert untranslated == [], f"{po}: translate these (and drop any fuzzy flag), then compilemessages"


@pytest.mark.parametrize("po", CATALOGS, ids=lambda po: po.parent.parent.name)
def test_the_shipped_mo_is_compiled_from_the_po(po: Path, tmp_path: Path):
    shipped = po.with_suffix(".mo")
    assert shipped.is_file(), f"{shipped} is missing: run `python manage.py compilemessages`"
    fresh = tmp_path / "django.mo"
    with fresh.open("wb") as target:
        write_mo(target, _read(po))

    def messages(mo: Path) -> dict:
        with mo.open("rb") as source:
            return {key: value for key, value in gettext.GNUTranslations(source)._catalog.items() if key}

    assert messages(shipped) == messages(fresh), f"{shipped} is stale: run `python manage.py compilemessages`"


def test_placeholders_survive_translation():
    for po in CATALOGS:
        for message in _read(po):
            ids = message.id if isinstance(message.id, tuple) else (message.id,)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            expected = _placeholders(ids[-1])
            for string in strings:
                assert _placeholders(string) == expected, f"{po}: {message.id!r} -> {string!r}"


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\((\w+)\)[sd]", text))
