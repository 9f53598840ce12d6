"""The roster: who may badge at a workplace, signed by the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siteclock.protocol.envelope import Envelope, _loads, canonical, seal
from siteclock.protocol.events import Kind
from siteclock.protocol.limits import (
    PROTOCOL_VERSION,
    MalformedMessage,
    check_badge,
    check_terminal_id,
)
from siteclock.protocol.signatures import Signer

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
    return canonical(seal(roster.to_body(), signer).to_wire())


def decode_roster(payload: bytes, gateway_keys: Mapping[str, bytes]) -> Roster:
    envelope = Envelope.from_wire(_loads(payload, "roster payload", max_items=16))
    envelope.verify(gateway_keys)
    return Roster.from_body(envelope.body)
