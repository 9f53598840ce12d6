"""Attendance events, their hash chain, and the batches that carry them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from siteclock.protocol.envelope import Envelope, _loads, canonical, seal
from siteclock.protocol.limits import (
    GENESIS_HASH,
    HASH_SIZE,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BODY_BYTES,
    MAX_FLAGS,
    MAX_PAYLOAD_BYTES,
    MAX_TEXT,
    MAXERROR_US_RANGE,
    NS_RANGE,
    PROTOCOL_VERSION,
    SEQ_RANGE,
    ChainBroken,
    MalformedMessage,
    ProtocolError,
    TooLarge,
    check_badge,
    check_int,
    check_terminal_id,
    check_text,
    check_workplace,
)
from siteclock.protocol.signatures import Signer

# --------------------------------------------------------------------------- events


class Kind(StrEnum):
    """What a tap means. The gateway maps breaks to CIaO ``out``/``in``."""

    IN = "in"
    OUT = "out"
    BREAK_START = "break_start"
    BREAK_END = "break_end"

    @property
    def at_work_after(self) -> bool:
        """Whether the worker is at work after this tap: ``in`` and the end of a break, which
        CIaO both registers as ``in`` (a break starts with ``out``)."""
        return self in (Kind.IN, Kind.BREAK_END)


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
    CLOCK_STEPPED = "clock_stepped"  # the wall clock stepped since this boot's previous tap


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
