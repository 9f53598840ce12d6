"""The written shape of an INSS/BIS number, shared by the parser and the log redaction.

The gateway's parser (``gateway.identifiers.normalize_inss``) accepts 11 digits with any of
these separators anywhere between them (``85073003328``, ``85.07.30-033.28``,
``85-07-30-033-28``, ``85/07/30-033/28``, ``85 07 30 033 28``...). The redaction in
:mod:`siteclock.log` and in reports masks every such run of 11 digits. Both are built from the
constants here, so a form the parser learns to accept is masked the same day.
"""

from __future__ import annotations

import re

SEPARATORS = r"\s.\-/"
"""Characters the parser drops between digits (a regex character-class body)."""
DIGITS = 11

SEPARATOR_RE = re.compile(f"[{SEPARATORS}]")
WRITTEN_INSS_RE = re.compile(
    rf"(?<![0-9])[0-9](?:[{SEPARATORS}]*[0-9]){{{DIGITS - 1}}}(?![0-9])"
)
"""Eleven digits with any separators between them, not part of a longer digit run."""

REDACTED = "<inss-redacted>"


def redact(text: str) -> str:
    """``text`` with every INSS-shaped number masked (valid or not: a typo is still personal)."""
    return WRITTEN_INSS_RE.sub(REDACTED, text)
