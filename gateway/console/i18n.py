"""The console's languages: Dutch, French and English.

English is the text in the code and templates (``_("Registrations")``); ``catalogs/nl.json``
and ``catalogs/fr.json`` map each English text to its translation. A text missing from a
catalog shows in English (``tests/unit/test_console_i18n.py`` fails when one is missing).
Texts with values use ``str.format`` names: ``_("{n} on site", n=3)``.

The language of a request: ``?lang=`` (remembered in a cookie), else that cookie, else the
account's language, else the browser's ``Accept-Language``, else the configured default.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from flask import g, has_request_context

from siteclock.gateway.console.config import LANGUAGES

LANG_COOKIE = "siteclock_lang"


@functools.cache
def catalog(language: str) -> dict[str, str]:
    """English text -> translation (empty for English)."""
    if language == "en":
        return {}
    text = resources.files("siteclock.gateway.console").joinpath(f"catalogs/{language}.json")
    return dict(json.loads(text.read_text(encoding="utf-8")))


def translate(language: str, text: str, **values: Any) -> str:
    translated = catalog(language).get(text, text) if language in LANGUAGES else text
    return translated.format(**values) if values else translated


def current_language() -> str:
    return str(getattr(g, "lang", "en")) if has_request_context() else "en"


def _(text: str, **values: Any) -> str:
    """``text`` in the language of the current request."""
    return translate(current_language(), text, **values)


def choose_language(
    asked: str | None, cookie: str | None, account: str | None, accept: Any, default: str
) -> str:
    """The language of a request (see the module's docstring); ``accept`` is Werkzeug's
    ``request.accept_languages``."""
    for candidate in (asked, cookie, account):
        if candidate in LANGUAGES:
            return str(candidate)
    best = accept.best_match(LANGUAGES) if accept is not None else None
    return str(best) if best else default
