"""The wire contract between terminal and gateway.

This is the only module that knows how an attendance event, an acknowledgement, a roster
or a terminal status looks on the wire. The terminal and the gateway both import it; neither
copies it. ``docs/protocol.md`` is its prose twin: change one, change the other.

Canonical bytes are deterministic CBOR (RFC 8949 section 4.2, "core deterministic encoding"):
integers stay integers (nanosecond timestamps do not fit JSON's 2**53), byte strings stay bytes
(hashes, signatures), map keys are sorted by the encoder, and the C-accelerated ``cbor2`` makes
it cheap on a Raspberry Pi. The bytes that were signed are shipped and stored as they are and
never re-serialised, so a signature checked today still checks in ten years.

Example::

    signer = Ed25519Signer.generate()
    signed = sign_event(event, signer)
    payload = encode_batch([signed])
    [received] = decode_batch(payload)
    verify_event(received, {signer.kid: signer.public_key_bytes()})
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

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


# --------------------------------------------------------------------------- topics


TOPIC_ROOT = "siteclock/v1"


class Channel(StrEnum):
    """The four topics of a terminal; the broker ACL lets it use only its own."""

    EVENTS = "events"  # terminal -> gateway, QoS 1, never retained
    STATUS = "status"  # terminal -> anyone, retained JSON, also the Last Will
    ACK = "ack"  # gateway -> terminal, QoS 1
    CONFIG = "config"  # gateway -> terminal, retained signed roster


def topic(terminal_id: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{check_terminal_id(terminal_id)}/{channel}"


def subscription(channel: Channel, *, share_group: str | None = None) -> str:
    """The gateway's filter for one channel of every terminal, shared when a group is given."""
    flt = f"{TOPIC_ROOT}/+/{channel}"
    return f"$share/{share_group}/{flt}" if share_group else flt


def parse_topic(value: str) -> tuple[str, Channel]:
    """``siteclock/v1/<terminal>/<channel>`` -> (terminal id, channel)."""
    parts = value.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise MalformedMessage(f"topic {value!r} is not {TOPIC_ROOT}/<terminal>/<channel>")
    try:
        channel = Channel(parts[3])
    except ValueError:
        raise MalformedMessage(f"topic {value!r} names no known channel") from None
    return check_terminal_id(parts[2]), channel


# --------------------------------------------------------------------------- signatures


class Signer(Protocol):
    """Anything that signs bytes: a key file today, a secure element tomorrow."""

    alg: str
    kid: str

    def sign(self, data: bytes) -> bytes: ...

    def public_key_bytes(self) -> bytes: ...


class SignatureAlgorithm(Protocol):
    name: str

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` is valid."""


def key_id(public_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@lru_cache(maxsize=4096)
def _ed25519_public_key(public_key: bytes) -> ed25519.Ed25519PublicKey:
    """The key object for raw public key bytes, kept: a gateway checks thousands of events per
    second from a few hundred keys, and rebuilding the object each time is wasted work.
    Invalid bytes raise ``ValueError`` and are not kept."""
    return ed25519.Ed25519PublicKey.from_public_bytes(public_key)


class _Ed25519:
    name = "ed25519"

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        try:
            _ed25519_public_key(bytes(public_key)).verify(signature, data)
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature("ed25519 signature does not verify") from exc


class _EcdsaP256:
    """ECDSA P-256 with SHA-256 (COSE ES256), what an ATECC608 secure element can do.

    Signatures are the raw 64-byte r||s form; public keys are X9.62 uncompressed points.
    """

    name = "es256"

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        if len(signature) != 64:
            raise BadSignature("es256 signature is not 64 bytes")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature("es256 signature does not verify") from exc


ALGORITHMS: dict[str, SignatureAlgorithm] = {a.name: a for a in (_Ed25519(), _EcdsaP256())}


class Ed25519Signer:
    """The default signer: an Ed25519 private key held in memory (loaded from a 0600 file)."""

    alg = "ed25519"

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_key_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class EcdsaP256Signer:
    """ES256 in software; a secure element would implement the same three members."""

    alg = "es256"

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> EcdsaP256Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def public_key_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --------------------------------------------------------------------------- envelope


def check_cbor(data: bytes, what: str, *, max_items: int) -> None:
    """Refuse, before any decoder sees them, CBOR bytes using anything this protocol does not:
    tags (the regular-expression tag alone costs up to 2 s of CPU in a general decoder, big
    numbers and dates arrive as tags too), floats, undefined and other simple values,
    indefinite lengths, more than ``max_items`` data items, nesting deeper than
    :data:`MAX_CBOR_DEPTH`, truncation and trailing bytes. Only a walk over the heads: no
    objects are built, so the cost is bounded by ``max_items``."""
    size, pos, items = len(data), 0, 0
    pending = [1]  # data items still expected at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= size:
            raise MalformedMessage(f"{what} is truncated CBOR")
        head = data[pos]
        pos += 1
        major, info = head >> 5, head & 31
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > size:
                raise MalformedMessage(f"{what} is truncated CBOR")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif major == 7 or info == 31:
            raise MalformedMessage(f"{what} uses CBOR indefinite lengths or breaks")
        else:
            raise MalformedMessage(f"{what} uses a reserved CBOR head")
        items += 1
        if items > max_items:
            raise MalformedMessage(f"{what} has more than {max_items} CBOR items")
        if major <= 1:
            continue
        if major <= 3:  # byte or text string
            if arg > size - pos:
                raise MalformedMessage(f"{what} is truncated CBOR")
            pos += arg
        elif major <= 5:  # array or map: every member needs at least one byte
            count = arg if major == 4 else 2 * arg
            if count > size - pos:
                raise MalformedMessage(f"{what} is truncated CBOR")
            if len(pending) > MAX_CBOR_DEPTH:
                raise MalformedMessage(f"{what} nests deeper than {MAX_CBOR_DEPTH}")
            pending.append(count)
        elif major == 6:
            raise MalformedMessage(f"{what} uses CBOR tag {arg}; this protocol uses none",
                                   reason="cbor_tag")  # fmt: skip
        elif info not in (20, 21, 22):  # false, true, null
            raise MalformedMessage(f"{what} uses a CBOR float or simple value")
    if pos != size:
        raise MalformedMessage(f"{what} has {size - pos} bytes after its CBOR value")


def _loads(data: bytes, what: str, *, max_items: int) -> Any:
    """Decode CBOR of this protocol's subset only (see :func:`check_cbor`)."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedMessage(f"{what} is not bytes")
    check_cbor(data, what, max_items=max_items)
    try:
        return cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many unrelated types on garbage
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None


def canonical(value: Any) -> bytes:
    """Deterministic CBOR of plain values (dict, list, str, int, bytes, bool, None)."""
    return cbor2.dumps(value, canonical=True)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Signed bytes as shipped: ``body`` is never decoded and re-encoded before verifying."""

    body: bytes
    alg: str
    kid: str
    sig: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed body: the link in a terminal's hash chain."""
        return hashlib.sha256(self.body).digest()

    def to_map(self) -> dict[str, Any]:
        return {"body": self.body, "alg": self.alg, "kid": self.kid, "sig": self.sig}

    @classmethod
    def from_map(cls, raw: Any) -> Envelope:
        if not isinstance(raw, Mapping):
            raise MalformedMessage("envelope is not a map")
        body, alg, kid, sig = (raw.get(k) for k in ("body", "alg", "kid", "sig"))
        if not isinstance(body, bytes) or not isinstance(sig, bytes):
            raise MalformedMessage("envelope body and sig must be byte strings")
        if not isinstance(alg, str) or not isinstance(kid, str):
            raise MalformedMessage("envelope alg and kid must be text")
        if len(body) > MAX_EVENT_BODY_BYTES or len(sig) > 128 or len(alg) > 16 or len(kid) > 64:
            raise MalformedMessage("envelope field too long", reason="too_large")
        return cls(body=body, alg=alg, kid=kid, sig=sig)

    def verify(self, keys: Mapping[str, bytes]) -> None:
        """Check the signature with the public key named by ``kid`` in ``keys``."""
        algorithm = ALGORITHMS.get(self.alg)
        if algorithm is None:
            raise BadSignature(f"unknown signature algorithm {self.alg!r}")
        public = keys.get(self.kid)
        if public is None:
            raise UnknownKey(f"no public key with id {self.kid!r}")
        algorithm.verify(public, self.sig, self.body)


def seal(body: bytes, signer: Signer) -> Envelope:
    return Envelope(body=body, alg=signer.alg, kid=signer.kid, sig=signer.sign(body))


# --------------------------------------------------------------------------- events


class Kind(StrEnum):
    """What a tap means. The gateway maps breaks to CIaO ``out``/``in``."""

    IN = "in"
    OUT = "out"
    BREAK_START = "break_start"
    BREAK_END = "break_end"


class Flag(StrEnum):
    """Why an event deserves a second look. Flags never stop an event from being recorded."""

    ODD_SEQUENCE = "odd_sequence"  # e.g. a second `in` without an `out`
    UNKNOWN_BADGE = "unknown_badge"  # not in the terminal's roster when tapped
    CLOCK_UNSYNCED = "clock_unsynced"  # wall time not confirmed by NTP at the tap
    BLOCKED_BADGE = "blocked_badge"  # in the roster but blocked by the employer when tapped
    SELFTEST = "selftest"  # the installer's check tap: stored and acked, never sent to the NSSO
    # Direction (docs/direction.md). Added in place: an older gateway stores them as text.
    DIRECTION_GUESS = "direction_guess"  # decided without the site's view (terminal offline)
    FIXED_DIRECTION = "fixed_direction"  # an entry or exit reader: the kind is its config
    MISSING_OUT = "missing_out"  # a new shift began while the last one had no `out`


NON_ATTENDANCE_FLAGS = frozenset({Flag.SELFTEST})
"""An event with one of these flags is not an attendance tap: it never changes anyone's state.
(A badge-enrolment tap is always of a badge the terminal does not know yet, so it only ever
touches that unknown badge's own state, never a worker's; the gateway claims it by hand.)"""


@dataclass(frozen=True, slots=True)
class ClockState:
    """How far the terminal's wall clock can be trusted at one moment.

    ``maxerror_us`` is the kernel's estimate (``adjtimex``), -1 when unknown. ``synced`` follows
    systemd's rule: maxerror below 16 s.
    """

    synced: bool
    maxerror_us: int
    source: str

    def to_map(self) -> dict[str, Any]:
        return {"synced": self.synced, "maxerror_us": self.maxerror_us, "source": self.source}

    @classmethod
    def from_map(cls, raw: Any) -> ClockState:
        if not isinstance(raw, Mapping):
            raise MalformedMessage("clock is not a map")
        synced, maxerror, source = raw.get("synced"), raw.get("maxerror_us"), raw.get("source")
        if not isinstance(synced, bool) or type(maxerror) is not int or not isinstance(source, str):
            raise MalformedMessage("clock needs synced:bool, maxerror_us:int, source:str")
        check_int("clock maxerror_us", maxerror, MAXERROR_US_RANGE)
        if len(source) > MAX_TEXT:
            raise MalformedMessage(f"clock source longer than {MAX_TEXT} characters")
        return cls(synced=synced, maxerror_us=maxerror, source=source)


_EVENT_FIELDS = (
    "v", "terminal", "workplace", "seq", "prev", "id", "kind", "badge",
    "wall_ns", "boot_id", "boot_ns", "clock", "flags",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    """One tap, as the terminal recorded it. Its canonical bytes are what gets signed."""

    terminal_id: str
    workplace: str
    seq: int
    prev_hash: bytes
    event_id: str
    kind: Kind
    badge: str
    wall_ns: int
    boot_id: str
    boot_ns: int
    clock: ClockState
    flags: tuple[str, ...] = field(default=())

    def to_map(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "terminal": self.terminal_id,
            "workplace": self.workplace,
            "seq": self.seq,
            "prev": self.prev_hash,
            "id": self.event_id,
            "kind": str(self.kind),
            "badge": self.badge,
            "wall_ns": self.wall_ns,
            "boot_id": self.boot_id,
            "boot_ns": self.boot_ns,
            "clock": self.clock.to_map(),
            "flags": sorted(self.flags),
        }

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_map())

    @classmethod
    def from_bytes(cls, body: bytes) -> Event:
        if len(body) > MAX_EVENT_BODY_BYTES:
            raise TooLarge(f"event body of {len(body)} bytes exceeds {MAX_EVENT_BODY_BYTES}")
        return cls.from_map(_loads(body, "event body", max_items=64))

    @classmethod
    def from_map(cls, raw: Any) -> Event:
        if not isinstance(raw, Mapping):
            raise MalformedMessage("event body is not a map")
        missing = [k for k in _EVENT_FIELDS if k not in raw]
        if missing:
            raise MalformedMessage(f"event body lacks {', '.join(missing)}")
        extra = sorted(set(raw) - set(_EVENT_FIELDS), key=str)
        if extra:
            raise MalformedMessage(f"event body has unknown fields {extra}")
        if raw["v"] != PROTOCOL_VERSION:
            raise MalformedMessage(f"event version {raw['v']!r} is not {PROTOCOL_VERSION}")
        check_int("event seq", raw["seq"], SEQ_RANGE)
        check_int("event wall_ns", raw["wall_ns"], NS_RANGE)
        check_int("event boot_ns", raw["boot_ns"], NS_RANGE)
        if not isinstance(raw["prev"], bytes) or len(raw["prev"]) != HASH_SIZE:
            raise MalformedMessage("event prev must be a 32-byte hash")
        check_text("event id", raw["id"])
        check_text("event boot_id", raw["boot_id"])
        try:
            kind = Kind(raw["kind"])
        except (TypeError, ValueError):
            raise MalformedMessage(f"event kind {raw['kind']!r} is unknown") from None
        flags = raw["flags"]
        if not isinstance(flags, list) or len(flags) > MAX_FLAGS:
            raise MalformedMessage(f"event flags must be a list of at most {MAX_FLAGS}")
        for flag in flags:
            check_text("event flag", flag)
        return cls(
            terminal_id=check_terminal_id(raw["terminal"]),
            workplace=check_workplace(raw["workplace"]),
            seq=raw["seq"],
            prev_hash=raw["prev"],
            event_id=raw["id"],
            kind=kind,
            badge=check_badge(raw["badge"]),
            wall_ns=raw["wall_ns"],
            boot_id=raw["boot_id"],
            boot_ns=raw["boot_ns"],
            clock=ClockState.from_map(raw["clock"]),
            flags=tuple(flags),
        )


@dataclass(frozen=True)
class SignedEvent:
    """An event as it travels: the signed envelope, with the decoded event at hand."""

    envelope: Envelope

    @cached_property
    def event(self) -> Event:
        return Event.from_bytes(self.envelope.body)

    @property
    def digest(self) -> bytes:
        return self.envelope.digest

    def verify(self, keys: Mapping[str, bytes]) -> Event:
        """Check the signature, then decode. Returns the event."""
        self.envelope.verify(keys)
        return self.event


def sign_event(event: Event, signer: Signer) -> SignedEvent:
    return SignedEvent(seal(event.canonical_bytes(), signer))


def verify_event(signed: SignedEvent, keys: Mapping[str, bytes]) -> Event:
    return signed.verify(keys)


def verify_chain(
    events: Iterable[SignedEvent],
    keys: Mapping[str, bytes],
    *,
    prev_hash: bytes = GENESIS_HASH,
    first_seq: int = 1,
) -> int:
    """Verify that ``events`` are one terminal's unbroken, signed history.

    Starts from ``prev_hash``/``first_seq`` (the genesis by default, or a known checkpoint).
    Returns the number of events checked; raises :class:`ChainBroken` at the first event that is
    missing, reordered, altered or signed by another key, naming its position.
    """
    expected_seq, expected_prev, terminal = first_seq, prev_hash, None
    count = 0
    for count, signed in enumerate(events, start=1):
        try:
            event = signed.verify(keys)
        except ProtocolError as exc:
            raise ChainBroken(f"event #{count} (expected seq {expected_seq}): {exc}") from exc
        if terminal is None:
            terminal = event.terminal_id
        if event.terminal_id != terminal:
            raise ChainBroken(f"seq {event.seq} is from terminal {event.terminal_id!r}")
        if event.seq != expected_seq:
            raise ChainBroken(f"expected seq {expected_seq}, found {event.seq}")
        if event.prev_hash != expected_prev:
            raise ChainBroken(f"seq {event.seq} does not link to the event before it")
        expected_seq, expected_prev = event.seq + 1, signed.digest
    return count


# --------------------------------------------------------------------------- batches


def encode_batch(events: Sequence[SignedEvent]) -> bytes:
    """One MQTT payload on the events topic: one or more signed events in sequence order."""
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds 1..{MAX_BATCH_EVENTS} events, not {len(events)}")
    return canonical({"v": PROTOCOL_VERSION, "events": [e.envelope.to_map() for e in events]})


def decode_batch(payload: bytes) -> list[SignedEvent]:
    """Parse an events payload. Signatures are *not* checked here; see :func:`verify_event`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise TooLarge(f"events payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    raw = _loads(payload, "events payload", max_items=8 + 9 * MAX_BATCH_EVENTS)
    if not isinstance(raw, Mapping) or raw.get("v") != PROTOCOL_VERSION:
        raise MalformedMessage("events payload is not a version 1 map")
    items = raw.get("events")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_EVENTS:
        raise MalformedMessage(f"events payload must list 1..{MAX_BATCH_EVENTS} events")
    return [SignedEvent(Envelope.from_map(item)) for item in items]


# --------------------------------------------------------------------------- acks and verdicts


class Outcome(StrEnum):
    """The NSSO's final word on one event, as the terminal shows it to the worker."""

    REGISTERED = "registered"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Verdict:
    seq: int
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """Gateway -> terminal. ``stored``: sequence numbers now safe in the gateway's inbox, the
    only thing that lets a terminal call an event delivered. ``verdicts``: NSSO outcomes."""

    stored: tuple[int, ...] = ()
    verdicts: tuple[Verdict, ...] = ()

    def encode(self) -> bytes:
        return canonical(
            {
                "v": PROTOCOL_VERSION,
                "stored": _to_ranges(self.stored),
                "verdicts": [[v.seq, str(v.outcome), v.reason] for v in self.verdicts],
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> Ack:
        raw = _loads(payload, "ack payload", max_items=1_000_000)
        if not isinstance(raw, Mapping) or raw.get("v") != PROTOCOL_VERSION:
            raise MalformedMessage("ack payload is not a version 1 map")
        try:
            stored = tuple(_from_ranges(raw.get("stored", [])))
            verdicts = tuple(
                Verdict(int(seq), Outcome(outcome), str(reason))
                for seq, outcome, reason in raw.get("verdicts", [])
            )
        except (TypeError, ValueError) as exc:
            raise MalformedMessage(f"ack payload is malformed: {exc}") from None
        return cls(stored=stored, verdicts=verdicts)


def _to_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[1,2,3,7] -> [[1,3],[7,7]]: a drained backlog acks in a few bytes."""
    ranges: list[list[int]] = []
    for s in sorted(set(seqs)):
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    return ranges


def _from_ranges(ranges: Any) -> Iterable[int]:
    total = 0
    for lo, hi in ranges:
        if type(lo) is not int or type(hi) is not int or not 1 <= lo <= hi:
            raise ValueError(f"bad range {lo!r}..{hi!r}")
        total += hi - lo + 1
        if total > 1_000_000:
            raise ValueError("ack names too many events")
        yield from range(lo, hi + 1)


# --------------------------------------------------------------------------- roster


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """A badge the terminal may greet by name. ``worker`` is a pseudonymous reference:
    the INSS number never leaves the gateway."""

    badge: str
    worker: str
    name: str
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class DayEntry:
    """The gateway's view of one worker's last attendance tap on the workplace, from every
    terminal of the site: ``kind`` is ``in`` or ``out`` as relayed, ``wall_ns`` its time.
    Terminals use it to decide the direction of that worker's next tap (docs/direction.md)."""

    worker: str
    kind: Kind
    wall_ns: int


@dataclass(frozen=True, slots=True)
class Roster:
    terminal_id: str
    version: int
    entries: tuple[RosterEntry, ...]
    day: tuple[DayEntry, ...] = ()
    """Site state, added after version 1 shipped: an optional ``day`` key that older terminals
    ignore (they read only the keys they know), so old and new parse each other's rosters."""

    def to_body(self) -> bytes:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "terminal": self.terminal_id,
            "version": self.version,
            "entries": [[e.badge, e.worker, e.name, e.blocked] for e in self.entries],
        }
        if self.day:
            body["day"] = [[d.worker, str(d.kind), d.wall_ns] for d in self.day]
        return canonical(body)

    @classmethod
    def from_body(cls, body: bytes) -> Roster:
        raw = _loads(body, "roster", max_items=10_000_000)
        if not isinstance(raw, Mapping) or raw.get("v") != PROTOCOL_VERSION:
            raise MalformedMessage("roster is not a version 1 map")
        try:
            entries = tuple(
                RosterEntry(check_badge(b), str(w), str(n), bool(blk))
                for b, w, n, blk in raw["entries"]
            )
            day = tuple(_day_entry(item) for item in raw.get("day", ()))
            return cls(check_terminal_id(raw["terminal"]), int(raw["version"]), entries, day)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"roster is malformed: {exc}") from None


def _day_entry(item: Any) -> DayEntry:
    worker, kind, wall_ns = item
    if not isinstance(worker, str) or type(wall_ns) is not int or wall_ns < 0:
        raise ValueError(f"day entry {item!r} is not [worker, kind, wall_ns]")
    return DayEntry(worker, Kind(kind), wall_ns)


def encode_roster(roster: Roster, signer: Signer) -> bytes:
    """The retained payload on a terminal's config topic, signed by the gateway."""
    return canonical(seal(roster.to_body(), signer).to_map())


def decode_roster(payload: bytes, gateway_keys: Mapping[str, bytes]) -> Roster:
    envelope = Envelope.from_map(_loads(payload, "roster payload", max_items=16))
    envelope.verify(gateway_keys)
    return Roster.from_body(envelope.body)


# --------------------------------------------------------------------------- status


def encode_status(status: Mapping[str, Any]) -> bytes:
    """Retained JSON on the status topic (heartbeat and Last Will): readable by any dashboard.

    Carries ``state`` ("online"/"offline") and, when online, queue_depth, oldest_unsent_age_s,
    clock, reader, disk_free_mb, version, uptime_s, boot_id, boot_ns and wall_ns, and, when the
    clock is synced, a signed ``clock_proof`` (see :class:`ClockProof`): only that proof lets the
    gateway correct events taken before a clock sync in the same boot.
    """
    return json.dumps(dict(status), sort_keys=True, separators=(",", ":")).encode()


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise MalformedMessage(
            f"status holds a number of {len(text)} digits", reason="out_of_range"
        )
    return int(text)


def _json_constant(name: str) -> Any:
    raise MalformedMessage(f"status holds {name}, which is not JSON")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def decode_status(payload: bytes) -> dict[str, Any]:
    """Parse a status message within its limits: at most :data:`MAX_STATUS_BYTES` (checked
    before parsing), nesting at most :data:`MAX_STATUS_DEPTH`, integers of at most 19 digits,
    no NaN or Infinity. Any breach is a :class:`ProtocolError`, never another exception."""
    if len(payload) > MAX_STATUS_BYTES:
        raise TooLarge(f"status of {len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
    try:
        raw = json.loads(payload, parse_int=_json_int, parse_constant=_json_constant)
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"status is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("state") not in ("online", "offline"):
        raise MalformedMessage("status needs state 'online' or 'offline'")
    if _depth(raw) > MAX_STATUS_DEPTH:
        raise MalformedMessage(f"status nests deeper than {MAX_STATUS_DEPTH}")
    return raw


# --------------------------------------------------------------------------- clock proof

CLOCK_PROOF_FIELD = "clock_proof"
"""The status field holding a :class:`ClockProof` envelope, CBOR then base64 (JSON is text)."""


@dataclass(frozen=True, slots=True)
class ClockProof:
    """A synced clock reading, signed by the terminal: ``wall_ns`` was true at ``boot_ns`` of
    boot ``boot_id``. The gateway corrects the boot's unsynced taps with it, so it carries a
    signature like an event: an unsigned heartbeat cannot move a terminal's taps in time.
    Its body has ``type: "clock"`` and no event field, so it can never pass for an event."""

    terminal_id: str
    boot_id: str
    boot_ns: int
    wall_ns: int
    maxerror_us: int

    def to_body(self) -> bytes:
        return canonical({
            "v": PROTOCOL_VERSION, "type": "clock", "terminal": self.terminal_id,
            "boot_id": self.boot_id, "boot_ns": self.boot_ns, "wall_ns": self.wall_ns,
            "maxerror_us": self.maxerror_us,
        })  # fmt: skip

    @classmethod
    def from_body(cls, body: bytes) -> ClockProof:
        raw = _loads(body, "clock proof", max_items=32)
        fields = {"v", "type", "terminal", "boot_id", "boot_ns", "wall_ns", "maxerror_us"}
        if not isinstance(raw, Mapping) or set(raw) != fields:
            raise MalformedMessage(f"clock proof must have exactly {sorted(fields)}")
        if raw["v"] != PROTOCOL_VERSION or raw["type"] != "clock":
            raise MalformedMessage("clock proof is not a version 1 clock body")
        return cls(
            terminal_id=check_terminal_id(raw["terminal"]),
            boot_id=check_text("clock proof boot_id", raw["boot_id"]),
            boot_ns=check_int("clock proof boot_ns", raw["boot_ns"], NS_RANGE),
            wall_ns=check_int("clock proof wall_ns", raw["wall_ns"], NS_RANGE),
            maxerror_us=check_int("clock proof maxerror_us", raw["maxerror_us"], MAXERROR_US_RANGE),
        )


def attach_clock_proof(status: dict[str, Any], terminal_id: str, signer: Signer) -> dict[str, Any]:
    """The status with a signed :class:`ClockProof` of its own clock fields when its clock is
    synced (the terminal's side); unchanged otherwise."""
    clock = status.get("clock")
    if not isinstance(clock, Mapping) or clock.get("synced") is not True:
        return status
    try:
        proof = ClockProof(
            terminal_id, status["boot_id"], status["boot_ns"], status["wall_ns"],
            clock.get("maxerror_us", -1),
        )  # fmt: skip
    except KeyError:
        return status
    envelope = seal(proof.to_body(), signer)
    return {**status, CLOCK_PROOF_FIELD: base64.b64encode(canonical(envelope.to_map())).decode()}


def verify_clock_proof(
    status: Mapping[str, Any], terminal_id: str, keys: Mapping[str, bytes]
) -> ClockProof | None:
    """The status's clock proof, checked (signature with ``keys``, terminal, ranges); None when it
    carries none (a terminal from before proofs: its heartbeat is kept, it corrects nothing)."""
    text = status.get(CLOCK_PROOF_FIELD)
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 1024:
        raise MalformedMessage("clock_proof must be base64 text", reason="bad_clock_proof")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("clock_proof is not base64", reason="bad_clock_proof") from None
    envelope = Envelope.from_map(_loads(raw, "clock proof envelope", max_items=16))
    envelope.verify(keys)
    proof = ClockProof.from_body(envelope.body)
    if proof.terminal_id != terminal_id:
        raise MalformedMessage("clock proof names another terminal", reason="wrong_terminal")
    return proof
