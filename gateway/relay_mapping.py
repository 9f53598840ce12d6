"""Relay stage 1, pure: a stored event as a CIaO registration item, and the time to give it.

No I/O here: every function takes plain values and returns plain values, so each rule of the
mapping (docs/ciao.md) and of clock correction (docs/protocol.md, "Clock correction") is
tested alone (tests/unit/test_relay_mapping.py). The relay (:mod:`gateway.relay_submit`) looks
things up and records what these functions decide.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from siteclock.gateway.registry import EmployerKind, Resolved, Workplace
from siteclock.gateway.relay_store import State

WAITING_FOR_SYNC = "waiting for a clock sync"
NEVER_SYNCED = "clock never synced in this boot: terminal time used"
BODY_UNREADABLE = "event body unreadable: terminal time used"
IN_THE_FUTURE = "terminal time {ahead:.0f} s after the tap reached the gateway: arrival time used"
FUTURE_TOLERANCE_NS = 5 * 10**9
"""How far a tap's time may lie after its arrival at the gateway (clock skew between the two)
before it is taken for a clock that jumped ahead."""
BADGE_UNKNOWN = "badge unknown: no worker is linked to it"
BADGE_BLOCKED = "badge blocked by the employer"
WORKPLACE_UNKNOWN = "workplace unknown: the Declaration of Works is not in the registry"


def corrected_wall_ns(event_boot_ns: int, sync_wall_ns: int, sync_boot_ns: int) -> int:
    """The true time of a tap from a synced reading of the same boot (docs/protocol.md).

    The boot-time clock runs steadily through an NTP step, so the distance between the tap and
    the sync point on it is the distance in real time.
    """
    return sync_wall_ns - (sync_boot_ns - event_boot_ns)


def registration_date(wall_ns: int, precision: str = "seconds") -> str:
    """Nanoseconds since the epoch -> RFC 3339 UTC with ``Z`` (the tap's moment)."""
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if precision == "milliseconds":
        text += f".{rest // 1_000_000:03d}"
    return text + "Z"


def instant(value: str) -> datetime | None:
    """An RFC 3339 text as an aware UTC datetime; None if it is not one (or has no zone)."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def employer_json(resolved: Resolved) -> dict[str, str]:
    """The ``employer`` object of an item: an enterprise number or a foreign VAT number."""
    if resolved.employer.kind is EmployerKind.ENTERPRISE:
        return {"enterpriseNumber": resolved.employer.id}
    return {"foreignVatNumber": resolved.employer.id}


def place_json(workplace: Workplace) -> dict[str, Any]:
    """The ``placeOfWork`` of an item: coordinates when known, else the address."""
    if workplace.latitude is not None and workplace.longitude is not None:
        return {"coordinates": {"latitude": workplace.latitude, "longitude": workplace.longitude}}
    return {"address": dict(workplace.address or {})}


def ciao_item(
    worker: Resolved, place: Workplace, employer: dict[str, str], date: str, ciao_type: str
) -> dict[str, Any]:
    """One stored event as a CIaO registerInBulk item (the only place an item is built)."""
    return {
        "registrationDate": date,
        "ssin": worker.inss.reveal(),
        "type": ciao_type,
        "employer": employer,
        "placeOfWork": place_json(place),
        "contractualRelationshipReference": place.ref,
    }


def item_problem(problem: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The problem details as they concern item ``index`` of a batch: the issues naming it
    (renamed ``items[0]...`` -> the item's own fields) and the ones naming no item."""
    prefix = f"items[{index}]"
    issues = []
    for issue in problem.get("issues") or ():
        name = str(issue.get("name", ""))
        if name.startswith(prefix):
            issues.append({**issue, "name": "item" + name[len(prefix) :]})
        elif not name.startswith("items["):
            issues.append(dict(issue))
    return {**problem, "issues": issues}


def unresolved(worker_known: bool, badge_blocked: bool) -> tuple[State, str]:
    """Which registry gap holds a row (its worker or its workplace is missing): each has its
    own state and reason. ``worker_known`` means the badge resolved, so the workplace did not."""
    if worker_known:
        return State.UNKNOWN_WORKPLACE, WORKPLACE_UNKNOWN
    if badge_blocked:
        return State.BLOCKED_BADGE, BADGE_BLOCKED
    return State.UNKNOWN_BADGE, BADGE_UNKNOWN


# ---------------------------------------------------------------------- clock correction


@dataclass(frozen=True)
class ClockDecision:
    """The time to submit a tap at and the clock columns to record with it.

    ``wall_ns`` None means "hold it": ``columns`` then keep the row waiting for a sync point.
    ``counter`` names what happened, for the relay's counters (None: nothing to count)."""

    wall_ns: int | None
    columns: dict[str, Any] = field(default_factory=dict)
    counter: str | None = None


def terminal_time(terminal_ns: int) -> ClockDecision:
    """A tap made with a synced clock: its terminal's own time, nothing to record."""
    return ClockDecision(terminal_ns)


def not_after_arrival(decision: ClockDecision, terminal_ns: int, arrived_ns: int) -> ClockDecision:
    """Never a time in the future: a tap cannot have happened after it reached the gateway, so
    a time later than its arrival (beyond :data:`FUTURE_TOLERANCE_NS` of skew) comes from a
    clock that jumped ahead; the arrival is then the nearest time known not to be too late."""
    if decision.wall_ns is None or decision.wall_ns <= arrived_ns + FUTURE_TOLERANCE_NS:
        return decision
    columns = {
        **decision.columns,
        "terminal_wall_ns": terminal_ns,
        "corrected_wall_ns": arrived_ns,
        "clock_note": IN_THE_FUTURE.format(ahead=(decision.wall_ns - arrived_ns) / 1e9),
    }
    return ClockDecision(arrived_ns, columns, "clock_in_future")


def unreadable_body(terminal_ns: int) -> ClockDecision:
    """The intake verified this body, so this is a bug or a damaged file; holding it would not
    help, and the employer should still see the tap: terminal time, with a note."""
    columns = {"terminal_wall_ns": terminal_ns, "clock_note": BODY_UNREADABLE}
    return ClockDecision(terminal_ns, columns, "clock_body_unreadable")


def unsynced_tap(
    *,
    terminal_ns: int,
    event_boot_ns: int,
    sync: tuple[int, int] | None,
    created_ns: int,
    now_ns: int,
    hold_s: float,
    recheck_s: float,
) -> ClockDecision:
    """The time of a ``clock_unsynced`` tap (DESIGN decision 4).

    ``sync`` is the boot's latest synced reading as ``(wall_ns, boot_ns)``, or None. With one,
    the tap is dated from it; without, it is held until ``hold_s`` after its arrival
    (``created_ns``), looked at again every ``recheck_s``, then sent with the terminal's time
    and a note for the employer to review."""
    if sync is not None:
        corrected = corrected_wall_ns(event_boot_ns, *sync)
        if corrected > 0:  # a nonsense point (e.g. a bad boot_ns) is no sync point
            shift = (corrected - terminal_ns) / 1e9
            columns = {
                "terminal_wall_ns": terminal_ns,
                "corrected_wall_ns": corrected,
                "clock_note": f"corrected by {shift:+.3f} s from a clock sync in the same boot",
            }
            return ClockDecision(corrected, columns, "clock_corrected")
    hold_until = created_ns + int(hold_s * 1e9)
    if now_ns < hold_until:
        recheck = now_ns + int(recheck_s * 1e9)
        columns = {
            "state": State.AWAITING_CLOCK_SYNC,
            "next_try_ns": min(recheck, hold_until),
            "last_error": WAITING_FOR_SYNC,
            "updated_ns": now_ns,
        }
        return ClockDecision(None, columns)
    columns = {
        "terminal_wall_ns": terminal_ns,
        "corrected_wall_ns": None,
        "clock_note": NEVER_SYNCED,
    }
    return ClockDecision(terminal_ns, columns, "clock_never_synced")
