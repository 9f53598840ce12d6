"""Every text the console shows through ``_()`` has a Dutch and a French translation, with the
same ``{placeholders}``; and each request gets the language it asked for."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from siteclock.gateway.console.i18n import catalog, choose_language, translate

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *(ROOT / "gateway" / "console").rglob("*.py"),
    *(ROOT / "gateway" / "console" / "templates").glob("*.html"),
    *(ROOT / "provisioning" / "gateway" / "console_pages").glob("*.py"),
]
CALL = re.compile(r"""_\(\s*(["'])((?:\\.|(?!\1).)+)\1""")
LABELS = re.compile(r"""nav=\(((?:\(\s*"[^"]+",\s*"[^"]+"\s*\),?\s*)+)\)""")
WORDS_SHOWN = (
    # values the templates translate through a variable: _(r.state), _(r.kind), _(role)...
    "queued", "unknown_badge", "blocked_badge", "unknown_workplace", "awaiting_clock_sync",
    "awaiting_earlier", "submitted", "ambiguous", "needs_review", "pending", "registered",
    "rejected", "refused",
    "selftest", "enrolment", "in", "out", "break_start", "break_end", "admin", "site_manager",
    "employee", "self_employed", "temp_worker", "intern", "student", "other",
)  # fmt: skip


def texts() -> set[str]:
    found: set[str] = set(WORDS_SHOWN)
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        found |= {m.group(2).replace('\\"', '"') for m in CALL.finditer(source)}
        for group in LABELS.finditer(source):
            found |= set(re.findall(r'\(\s*"[^"]+",\s*"([^"]+)"\s*\)', group.group(1)))
    return found


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("language", ["nl", "fr"])
def test_every_text_is_translated_with_the_same_placeholders(language: str) -> None:
    translations = catalog(language)
    wanted = texts()
    assert len(wanted) > 80  # the extraction found the console's texts
    missing = sorted(wanted - set(translations))
    assert not missing, f"{language}.json lacks {missing}"
    for text in wanted:
        assert fields(translations[text]) == fields(text), (language, text)


def test_a_catalog_holds_no_text_the_console_no_longer_shows() -> None:
    stale = {lang: sorted(set(catalog(lang)) - texts()) for lang in ("nl", "fr")}
    assert stale == {"nl": [], "fr": []}


def test_translate_fills_placeholders_and_falls_back_to_english() -> None:
    assert translate("fr", "{n} on site", n=3).startswith("3")
    assert translate("nl", "no such text {x}", x=1) == "no such text 1"
    assert translate("en", "{n} on site", n=2) == "2 on site"


class Accept:
    def __init__(self, best: str | None) -> None:
        self.best = best

    def best_match(self, offered: object) -> str | None:
        return self.best


def test_the_language_asked_for_wins_then_cookie_account_browser_default() -> None:
    assert choose_language("fr", "nl", "en", Accept("nl"), "nl") == "fr"
    assert choose_language(None, "nl", "fr", Accept("en"), "fr") == "nl"
    assert choose_language("de", None, "fr", Accept("en"), "nl") == "fr"
    assert choose_language(None, None, None, Accept("en"), "nl") == "en"
    assert choose_language(None, None, None, Accept(None), "nl") == "nl"
