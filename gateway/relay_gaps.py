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

The same holds for an event whose predecessor waits for a sync point to date it
(``awaiting_clock_sync``, after a clock jump): until it is dated, where the taps after it stand
in the worker's day is not known.

Example (the relay, for a batch of rows in (terminal, seq) order)::

    order = TerminalOrder(store.registration_states(predecessors(rows)), now_ns=now,
                          hold_ns=..., recheck_ns=...)
    for row in rows:
        columns = order.hold(row)      # None: it may go on
        ...
        order.waits(key)               # it is held for its clock: its successors wait too
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from siteclock.gateway.relay_store import State

Key = tuple[str, int]
FIRST_SEQ = 1
"""A terminal's first event (its outbox starts at 1): nothing can be missing before it."""
WAITING_FOR_EARLIER = "waiting for an earlier event of its terminal"


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


WAITING_STATES = frozenset({State.AWAITING_EARLIER, State.AWAITING_CLOCK_SYNC})
"""A predecessor in one of these is not decided and cannot be yet: the events after it wait."""


class TerminalOrder:
    """Walks one batch in (terminal, seq) order and says which rows must wait for an earlier
    event of their terminal.

    ``states``: the registration state of each key of :func:`predecessors` the gateway holds (a
    key it does not hold is missing). A predecessor that waits itself (for an earlier event,
    or for a sync point to date it: ``awaiting_clock_sync``) counts as missing: until it is
    dated, where the worker's taps after it stand in time is not known. Rows of the batch that
    the caller holds for another reason are told with :meth:`waits`, before their successors
    are checked.
    """

    def __init__(
        self, states: Mapping[Key, str], *, now_ns: int, hold_ns: int, recheck_ns: int
    ) -> None:
        self._states = states
        self._now = now_ns
        self._hold = hold_ns
        self._recheck = recheck_ns
        self._seen: dict[Key, bool] = {}  # rows of this batch: True when they wait
        self.expired: list[Key] = []
        """Rows that went on although their predecessor is still missing (hold ran out)."""

    def hold(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The columns that make ``row`` wait for its predecessor, or None when it may go on.
        Call it for the rows in (terminal, seq) order."""
        terminal, seq = key = (row["terminal"], row["seq"])
        before = (terminal, seq - 1)
        if seq <= FIRST_SEQ:
            gap = False
        elif before in self._seen:
            gap = self._seen[before]
        else:
            gap = self._states.get(before, State.AWAITING_EARLIER) in WAITING_STATES
        give_up_ns = row["created_ns"] + self._hold
        if gap and self._now >= give_up_ns:
            self.expired.append(key)
            gap = False
        self._seen[key] = gap
        if not gap:
            return None
        return {
            "state": State.AWAITING_EARLIER,
            "next_try_ns": min(self._now + self._recheck, give_up_ns),
            "last_error": f"{WAITING_FOR_EARLIER} (seq {seq - 1})",
            "updated_ns": self._now,
        }

    def waits(self, key: Key) -> None:
        """A row of the batch that goes on from here but is held for another reason (its clock):
        its successors in the batch wait for it."""
        self._seen[key] = True
