"""Limits, identifier shapes and errors of the wire contract."""

from __future__ import annotations

import re
from typing import Any

PROTOCOL_VERSION = 1
HASH_SIZE = 32
GENESIS_HASH = bytes(HASH_SIZE)
"""The ``prev`` hash of a terminal's first event."""

MAX_BATCH_EVENTS = 500
"""Most events one MQTT message may carry; the gateway rejects larger batches."""
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest events message (a full batch of 500 events is about 190 KiB)."""
MAX_EVENT_BODY_BYTES = 2048
"""Largest signed event body (a real one is about 330 bytes)."""
MAX_STATUS_BYTES = 4096
"""Largest status message (a real heartbeat with its clock proof is about 900 bytes). Checked
before the JSON is parsed: a larger one is refused unread."""
MAX_STATUS_DEPTH = 4
"""Deepest nesting of a status (a heartbeat nests 2 levels: ``clock`` inside the status)."""
MAX_JSON_INT_DIGITS = 19
"""Longest integer a status may hold (int64); a 5,000-digit number is refused, not parsed."""

INT64_MAX = 2**63 - 1
"""SQLite's INTEGER is a signed 64-bit number: every integer the gateway stores is checked
against one of the ranges below before it gets near SQLite."""
SEQ_RANGE = (1, INT64_MAX)
NS_RANGE = (0, INT64_MAX)
"""``wall_ns`` (UTC ns: up to the year 2262) and ``boot_ns``."""
MAXERROR_US_RANGE = (-1, INT64_MAX)
"""``clock.maxerror_us``; -1 means unknown."""
MAX_TEXT = 64
"""Longest free text field of an event (event id, boot id, clock source, a flag)."""
MAX_FLAGS = 16
MAX_CBOR_DEPTH = 6
"""Deepest nesting of any CBOR message of this protocol (a batch nests 3 levels)."""

# Every identifier pattern ends in ``\Z``, never ``$``: ``$`` also matches before a trailing
# newline, and a newline smuggled into a terminal id corrupts the broker's password file.
TERMINAL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}\Z")
RESERVED_TERMINAL_PREFIX = "siteclock"
"""Terminal ids may not start with this: the gateway's broker names (username, client ids)
do, so a terminal can never log in or connect under a gateway identity."""
WORKPLACE_RE = re.compile(r"^[A-HJ-NP-Z0-9]{13}\Z")
"""A Declaration of Works reference: 13 characters, no I and no O (see ciao-api.md 3.1)."""
BADGE_RE = re.compile(r"^(nfc-a|nfc-b|nfc-f|em4100|wiegand|sim):[0-9A-F]{2,40}\Z")
"""A badge as the reader saw it: technology, a colon, the identifier in upper-case hex."""


# --------------------------------------------------------------------------- errors


class ProtocolError(ValueError):
    """A message does not follow this contract. ``reason`` is a short, countable code."""

    reason = "malformed"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        if reason is not None:
            self.reason = reason


class MalformedMessage(ProtocolError):
    """The bytes are not a message of this protocol (garbled, truncated, wrong types)."""

    reason = "malformed"


class UnknownKey(ProtocolError):
    """The message is signed with a key id the verifier does not hold."""

    reason = "unknown_key"


class BadSignature(ProtocolError):
    """The signature does not match the signed bytes and the named key."""

    reason = "bad_signature"


class TooLarge(MalformedMessage):
    """A message is larger than its kind allows; it was refused without being parsed."""

    reason = "too_large"


class ChainBroken(ProtocolError):
    """A sequence of events is not one unbroken hash chain (missing, reordered or changed)."""

    reason = "chain_broken"


# --------------------------------------------------------------------------- identifiers


def check_terminal_id(value: str) -> str:
    if not isinstance(value, str) or not TERMINAL_ID_RE.fullmatch(value):
        raise MalformedMessage(f"terminal id {value!r} is not 3-63 of [a-z0-9-]")
    if value.startswith(RESERVED_TERMINAL_PREFIX):
        raise MalformedMessage(
            f"terminal id {value!r} starts with {RESERVED_TERMINAL_PREFIX!r}, kept for the gateway"
        )
    return value


def check_workplace(value: str) -> str:
    if not isinstance(value, str) or not WORKPLACE_RE.fullmatch(value):
        raise MalformedMessage(
            f"workplace {value!r} is not a 13-character Declaration of Works reference"
        )
    return value


def check_int(name: str, value: Any, bounds: tuple[int, int]) -> int:
    """``value`` if an integer (not a bool) within ``bounds``, else :class:`MalformedMessage`."""
    lo, hi = bounds
    if type(value) is not int or not lo <= value <= hi:
        raise MalformedMessage(f"{name} must be an integer in {lo}..{hi}", reason="out_of_range")
    return value


def check_text(name: str, value: Any, longest: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= longest:
        raise MalformedMessage(f"{name} must be text of 1-{longest} characters")
    return value


def check_badge(value: str) -> str:
    if not isinstance(value, str) or not BADGE_RE.fullmatch(value):
        raise MalformedMessage(f"badge {value!r} is not '<technology>:<HEX>'")
    return value
