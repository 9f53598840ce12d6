"""Hold a terminal's events above a gap in its sequence until the gap fills.

The worker's in/out sequence (:mod:`gateway.sequence`) is decided in the order of the taps'
times, from every tap the gateway *holds*. A tap the gateway does not hold yet cannot be taken
into account: if seq 9 (the worker's ``out``) is decided while seq 1 (their ``in``) is still on
its way, the sequence sees an ``out`` with no ``in`` and "corrects" it to ``in``, and every
later tap of that worker that day is then corrected the other way. That happens after a gateway
restart: the terminal's later events reach the new process at once, and the one that was in
flight when the old process died comes back only with the terminal's resend, seconds later.

Sequence numbers say what is missing. A terminal numbers its events 1, 2, 3... without reuse
(its outbox), so an event whose predecessor the gateway does not hold is *above a gap*. It
waits in ``awaiting_earlier`` and is looked at again every ``recheck_ns``; it goes as soon as
the gap fills, or after ``hold_ns`` from its arrival when the missing event never comes (a
wiped outbox: the intake raises its ``seq_gap`` alert for that). An event that arrives after
the hold ran out is decided from the taps before it and flagged ``late`` as before.

Only the predecessor is looked up (one key per run of consecutive events), so the rule costs
one indexed read per terminal in a batch, whatever the length of its history.

Example::

    states = store.registration_states(predecessors(rows))
    release, hold = hold_above_gaps(rows, states, now_ns=now, hold_ns=..., recheck_ns=...)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siteclock.gateway.relay_store import State

Key = tuple[str, int]
FIRST_SEQ = 1
"""A terminal's first event (its outbox starts at 1): nothing can be missing before it."""
WAITING_FOR_EARLIER = "waiting for an earlier event of its terminal"


@dataclass
class GapDecision:
    """Which rows of a batch go on (``release``, in their order), which wait (``hold``:
    the columns to set), and which went on although their gap is still open (``expired``)."""

    release: list[Mapping[str, Any]] = field(default_factory=list)
    hold: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)
    expired: list[Key] = field(default_factory=list)


def predecessors(rows: Iterable[Mapping[str, Any]]) -> list[Key]:
    """The keys whose state decides whether ``rows`` are above a gap: the predecessor of each
    row that does not follow another row of the batch."""
    keys = {(r["terminal"], r["seq"]) for r in rows}
    return sorted(
        {
            (terminal, seq - 1)
            for terminal, seq in keys
            if seq > FIRST_SEQ and (terminal, seq - 1) not in keys
        }
    )


def hold_above_gaps(
    rows: Sequence[Mapping[str, Any]],
    states: Mapping[Key, str],
    *,
    now_ns: int,
    hold_ns: int,
    recheck_ns: int,
) -> GapDecision:
    """Split a batch (rows with ``terminal``, ``seq``, ``created_ns``) into the rows that may
    be decided now and the rows that wait for an earlier event of their terminal.

    ``states``: the registration state of each key of :func:`predecessors` the gateway holds
    (a key it does not hold is missing). A predecessor waiting itself (``awaiting_earlier``)
    counts as missing: everything below it is not there yet."""
    decision = GapDecision()
    waiting: set[Key] = set()  # rows of this batch that wait
    in_batch = {(r["terminal"], r["seq"]) for r in rows}
    for row in sorted(rows, key=lambda r: (r["terminal"], r["seq"])):
        terminal, seq = key = (row["terminal"], row["seq"])
        before = (terminal, seq - 1)
        if seq <= FIRST_SEQ:
            gap = False
        elif before in in_batch:
            gap = before in waiting
        else:
            gap = states.get(before, State.AWAITING_EARLIER) == State.AWAITING_EARLIER
        if not gap:
            decision.release.append(row)
            continue
        give_up_ns = row["created_ns"] + hold_ns
        if now_ns >= give_up_ns:
            decision.expired.append(key)
            decision.release.append(row)
            continue
        waiting.add(key)
        decision.hold.append(
            (
                key,
                {
                    "state": State.AWAITING_EARLIER,
                    "next_try_ns": min(now_ns + recheck_ns, give_up_ns),
                    "last_error": f"{WAITING_FOR_EARLIER} (seq {seq - 1})",
                    "updated_ns": now_ns,
                },
            )
        )
    # Keep the batch's own order for what goes on (the relay sorts by time next).
    released = {(r["terminal"], r["seq"]) for r in decision.release}
    decision.release = [r for r in rows if (r["terminal"], r["seq"]) in released]
    return decision
