"""The pt-BR catalog that ships with the project: every marked string in it, every message translated, and
the .mo the .po compiles to.

No gettext tools needed (CI has none): marked strings are found with Python's ast (and Django's templatize for
templates, as makemessages does), the .mo is compiled with Babel and compared as a catalog, not as bytes, so a
.mo made by msgfmt (`manage.py compilemessages`) or by Babel passes alike.
"""

import ast
import gettext
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.conf import settings
from django.utils.translation.template import templatize

# Where the project's own strings are; classifier/ml has no Django, and migrations and tests are not shown.
SOURCE_DIRS = ("catalog", "classifier", "config", "templates")
SKIPPED_DIRS = ("migrations", "ml")
MARKERS = {"gettext", "gettext_lazy", "gettext_noop", "_", "ngettext", "ngettext_lazy"}
# These take a context first ("category", "model version"): one English word, two Portuguese genders.
CONTEXT_MARKERS = {"pgettext", "pgettext_lazy"}
CALL = re.compile(r"\b(?:n?p?gettext)\(")
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


def _marker(call: ast.expr) -> str | None:
    return call.id if isinstance(call, ast.Name) else call.attr if isinstance(call, ast.Attribute) else None


def _text(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _msgids_of_calls(tree: ast.AST) -> Iterator[tuple[str | None, str]]:
    """(context, msgid) of each marked string."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        marker = _marker(node.func)
        if marker in MARKERS and node.args and _text(node.args[0]) is not None:
            yield None, _text(node.args[0])
        elif marker in CONTEXT_MARKERS and len(node.args) > 1 and _text(node.args[1]) is not None:
            yield _text(node.args[0]), _text(node.args[1])


def _msgids_of_template(path: Path) -> Iterator[tuple[str | None, str]]:
    """Django's templatize makes {% translate %} and {% blocktranslate %} gettext calls amid masked text."""
    for line in templatize(path.read_text(), origin=str(path)).splitlines():
        for match in CALL.finditer(line):
            # The call ends at one of the closing brackets after it: the first at which it parses.
            for end in (index + 1 for index, char in enumerate(line) if char == ")" and index > match.end()):
                try:
                    call = ast.parse(line[match.start() : end], mode="eval")
                except SyntaxError:
                    continue
                yield from _msgids_of_calls(call)
                break


def marked_strings() -> set[tuple[str | None, str]]:
    marked = set()
    for directory in SOURCE_DIRS:
        for path in (settings.BASE_DIR / directory).rglob("*"):
            if any(part in SKIPPED_DIRS for part in path.relative_to(settings.BASE_DIR).parts):
                continue
            if path.suffix == ".py":
                marked.update(_msgids_of_calls(ast.parse(path.read_text(), filename=str(path))))
            elif path.suffix == ".html":
                marked.update(_msgids_of_template(path))
    return marked


def test_every_marked_string_is_in_the_catalog_and_nothing_else():
    in_catalog = {
        (message.context, message.id[0] if isinstance(message.id, tuple) else message.id)
        for po in CATALOGS
        for message in _read(po)
        if message.id
    }
    marked = marked_strings()

    assert sorted(marked - in_catalog) == [], "run `make messages`, then translate the new entries"
    assert sorted(in_catalog - marked) == [], "run `make messages`: these are no longer in the code"
