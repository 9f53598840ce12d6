"""Acknowledgements and verdicts: what the gateway tells a terminal about its events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from siteclock.protocol.envelope import _loads, canonical
from siteclock.protocol.limits import PROTOCOL_VERSION, MalformedMessage

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
