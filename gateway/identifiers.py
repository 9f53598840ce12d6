"""Belgian identifiers the gateway must get right before anything reaches the NSSO.

* INSS (national register number) and BIS numbers: 11 digits ``YYMMDDSSSCC``; ``CC`` is
  ``97 - (YYMMDDSSS mod 97)``, and for people born in 2000 or later the 9 digits are prefixed
  with ``2`` before the modulo. A BIS number adds 20 or 40 to the month; the check is the same.
* Belgian enterprise numbers: 10 digits starting with 0 or 1; the last two are
  ``97 - (first eight mod 97)``.
* Foreign VAT numbers: only their basic shape (two-letter country, 2-12 characters).
* Declaration of Works references: the 13-character shape of the shared protocol.

Each ``normalize_*`` returns the canonical form or raises :class:`InvalidIdentifier`. Error
messages never contain the INSS itself: an INSS must not reach a log line, even a wrong one.
"""

from __future__ import annotations

import re

from siteclock.inss_shape import DIGITS, SEPARATOR_RE
from siteclock.protocol import WORKPLACE_RE


class InvalidIdentifier(ValueError):
    """An identifier has the wrong shape or check digits. ``kind`` names which identifier."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"{kind}: {problem}")
        self.kind = kind


_SEPARATORS = SEPARATOR_RE  # the same set the log redaction masks across (siteclock.inss_shape)
_VAT_RE = re.compile(r"[A-Z]{2}[0-9A-Z+*]{2,12}")


def inss_check_digits(first9: str, *, born_2000_or_later: bool = False) -> str:
    """The two check digits for the 9 leading digits of an INSS/BIS number."""
    base = int(("2" if born_2000_or_later else "") + first9)
    return f"{97 - base % 97:02d}"


def normalize_inss(value: str) -> str:
    """Return the 11 digits of a valid INSS or BIS number, separators removed."""
    digits = _SEPARATORS.sub("", value or "")
    if not re.fullmatch(f"[0-9]{{{DIGITS}}}", digits):
        raise InvalidIdentifier("inss", "must be 11 digits")
    month, day = int(digits[2:4]), int(digits[4:6])
    # 0 = birth month unknown; BIS numbers add 20 (sex unknown) or 40 (sex known) to the month.
    if month % 20 > 12 or month > 52 or day > 31:
        raise InvalidIdentifier("inss", "birth date part is impossible")
    first9, check = digits[:9], digits[9:]
    if check not in (inss_check_digits(first9), inss_check_digits(first9, born_2000_or_later=True)):
        raise InvalidIdentifier("inss", "check digits do not match")
    return digits


def is_valid_inss(value: str) -> bool:
    try:
        normalize_inss(value)
    except InvalidIdentifier:
        return False
    return True


def enterprise_check_digits(first8: str) -> str:
    return f"{97 - int(first8) % 97:02d}"


def normalize_enterprise_number(value: str) -> str:
    """Return the 10 digits of a valid Belgian enterprise number (``BE`` prefix allowed)."""
    text = _SEPARATORS.sub("", (value or "").upper()).removeprefix("BE")
    if len(text) == 9 and text.isdigit():  # old 9-digit numbers take a leading 0
        text = "0" + text
    if not re.fullmatch(r"[01]\d{9}", text):
        raise InvalidIdentifier("enterprise_number", f"{value!r} is not 10 digits starting 0 or 1")
    if text[8:] != enterprise_check_digits(text[:8]):
        raise InvalidIdentifier("enterprise_number", f"{value!r} check digits do not match")
    return text


def normalize_foreign_vat(value: str) -> str:
    """Return a foreign VAT number in upper case without separators (shape check only)."""
    text = _SEPARATORS.sub("", (value or "").upper())
    if not _VAT_RE.fullmatch(text):
        raise InvalidIdentifier("foreign_vat", f"{value!r} is not <country><2-12 characters>")
    if text.startswith("BE"):
        raise InvalidIdentifier("foreign_vat", "a Belgian employer uses its enterprise number")
    return text


def normalize_workplace(value: str) -> str:
    """Return a Declaration of Works reference (13 characters, no I, no O)."""
    text = (value or "").strip().upper()
    if not WORKPLACE_RE.match(text):
        raise InvalidIdentifier("workplace", f"{value!r} is not a 13-character DoW reference")
    return text
