"""The relay's tables in the gateway's SQLite file: one row per inbox event on its way to CIaO.

The intake owns ``inbox`` (verified, signed events, unique on terminal+seq). The relay copies
each inbox key into ``registrations`` and walks it through these states::

    queued -> submitted -> pending -> registered | rejected
       |          |  \\-> ambiguous -> (found) pending | (not found) queued
       |          |                 \\-> needs_review (search refused for too long: a person
       |          |                     decides; never resubmitted blind)
       |          \\-> refused (a 400 naming this item: it can never be accepted as it is)
       |-> unknown_badge | blocked_badge | unknown_workplace (retried when the registry changes)
       |-> awaiting_clock_sync (clock_unsynced, waiting for a sync point; then queued)
       \\-> awaiting_earlier (an earlier event of its terminal has not arrived: the worker's
            sequence is decided with it; then queued, see gateway/relay_gaps.py)

Nothing else ends a row: outages, 429s, refused credentials keep it ``queued`` with a backoff,
however long they last. ``siteclock relay requeue`` puts a refused, needs_review or unresolved
row back (audited in ``relay_requeues``).

    selftest (an installer's check tap, flagged ``selftest``: stored as evidence, never sent)
    enrolment (claimed by the employer as a badge-enrolment tap: evidence, never sent)

``submitted`` is written and committed *before* the POST leaves, so a relay killed mid-request
finds ``submitted`` rows on restart and treats them as ambiguous: it searches CIaO before it
sends them again. That, and never deleting a row, is how an event reaches CIaO exactly once.

The row keeps what was submitted (worker reference, employer, workplace, date, type; never the
INSS) so the search after an ambiguous failure asks for exactly that registration.

An event tapped with an unsynchronised clock (flag ``clock_unsynced``) is dated by the relay
from the terminal's next synced heartbeat of the same boot (table ``clock_sync``, written by
:class:`gateway.terminals.TerminalRegistry`). Its row then also keeps the terminal's own time
(``terminal_wall_ns``), the time submitted (``corrected_wall_ns``, NULL when none could be
computed) and why (``clock_note``), so the employer can see and review what was changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Any

from siteclock.gateway.db import RELAY_BUSY_TIMEOUT_S, GatewayDB, OnGatewayDB
from siteclock.gateway.db.relay_admin_ops import NOT_BEFORE_KEY
from siteclock.gateway.db.relay_ops import UNSYNCED_LIKE


class State(StrEnum):
    QUEUED = "queued"
    UNKNOWN_BADGE = "unknown_badge"  # no worker linked to this badge (yet)
    BLOCKED_BADGE = "blocked_badge"  # the badge is blocked by the employer
    UNKNOWN_WORKPLACE = "unknown_workplace"  # the registry lacks the Declaration of Works
    AWAITING_CLOCK_SYNC = "awaiting_clock_sync"  # clock_unsynced, held for a sync point
    AWAITING_EARLIER = "awaiting_earlier"  # above a gap in its terminal's seqs (relay_gaps)
    SUBMITTED = "submitted"
    AMBIGUOUS = "ambiguous"
    NEEDS_REVIEW = "needs_review"  # could not be reconciled in time: a person decides
    PENDING = "pending"  # created at CIaO, validity pending
    REGISTERED = "registered"  # final: valid
    REJECTED = "rejected"  # final: invalid, or not created
    REFUSED = "refused"  # final: a 400 named this item; the employer fixes it and requeues
    SELFTEST = "selftest"  # an installer's check tap: kept, never registered with the NSSO
    ENROLMENT = "enrolment"  # a badge-enrolment tap (provisioning.badge_enrolment): never sent

    # The tap of a badge nobody linked: the name badge enrolment claims such taps under.
    UNRESOLVED = "unknown_badge"


FINAL = frozenset({State.REGISTERED, State.REJECTED, State.REFUSED})
WAITING_FOR_REGISTRY = (State.UNKNOWN_BADGE, State.BLOCKED_BADGE, State.UNKNOWN_WORKPLACE)
SENDABLE = (State.QUEUED, State.AWAITING_CLOCK_SYNC, State.AWAITING_EARLIER)
REQUEUE_TARGET = {
    State.REFUSED: State.QUEUED,
    State.QUEUED: State.QUEUED,  # sooner: forget its backoff
    State.UNKNOWN_BADGE: State.QUEUED,
    State.BLOCKED_BADGE: State.QUEUED,
    State.UNKNOWN_WORKPLACE: State.QUEUED,
    # May already be at CIaO: back to the search, never straight to a POST.
    State.NEEDS_REVIEW: State.AMBIGUOUS,
}
"""What ``siteclock relay requeue`` may put back, and where to."""


class RelayStore(OnGatewayDB):
    """The relay's view of the gateway database: named operations, used by one thread at a
    time (the relay's), plus the Retry-After instant saved from the client's thread.

    The methods that take ``db`` (the object :meth:`tx` yields) run inside that transaction;
    the stages' reads are named operations of :class:`siteclock.gateway.db.GatewayDB`
    (:mod:`gateway.relay_queries`).
    """

    busy_timeout_s = RELAY_BUSY_TIMEOUT_S

    def __init__(self, db_path: Path | str | GatewayDB) -> None:
        super().__init__(db_path)
        self.path = str(self.db.path)

    def tx(self) -> AbstractContextManager[GatewayDB]:
        """One write transaction (nested: a savepoint); yields the database."""
        return self.db.atomic()

    def take_new(self, now_ns: int, *, full: bool) -> int:
        """Copy new inbox keys in as ``queued``; see :meth:`GatewayDB.take_new_events`."""
        return self.db.take_new_events(now_ns, full=full)

    def recover_submitted(self, now_ns: int, submitters: Iterable[str | None]) -> int:
        """A ``submitted`` row of a relay that is gone may or may not have reached CIaO: it
        becomes ``ambiguous`` (``submitters``: those relays' instance ids, ``None`` for rows
        marked before ids were recorded; see :mod:`gateway.relay_instances`)."""
        return self.db.recover_submitted(now_ns, submitters)

    def queued(self, now_ns: int, limit: int) -> list[Any]:
        return self.db.sendable(now_ns, limit)

    def claimed_ids(self, ids: Iterable[str]) -> set[str]:
        return self.db.claimed_ciao_ids(ids)

    def counts(self) -> dict[str, int]:
        """Rows per state: what the dashboard shows and the tests check."""
        return self.db.registration_counts()

    def get(self, terminal: str, seq: int) -> Any | None:
        return self.db.registration(terminal, seq)

    def not_before_ns(self) -> int:
        return self.db.not_before_ns()

    def save_not_before(self, instant_ns: int) -> None:
        """Persist a Retry-After instant at once, from whichever thread learnt it."""
        self.db.save_not_before(instant_ns)

    def raise_alert(self, cause: str, message: str, now_ns: int) -> bool:
        """Open an alert for ``cause`` (True when it was not open already)."""
        return self.db.raise_relay_alert(cause, message, now_ns)

    def clear_alert(self, cause: str, now_ns: int) -> str | None:
        """Close the open alert for ``cause``; its message, or None when none was open."""
        return self.db.clear_relay_alert(cause, now_ns)

    def open_alerts(self) -> dict[str, str]:
        """Open alerts: cause -> message."""
        return self.db.open_relay_alerts()

    def select(
        self,
        *,
        keys: Sequence[tuple[str, int]] = (),
        worker: str | None = None,
        terminal: str | None = None,
        state: str | None = None,
        limit: int = 100_000,
    ) -> list[Any]:
        """Rows matching every given criterion (``worker``: a worker reference or a badge)."""
        return self.db.select_registrations(
            keys=keys, worker=worker, terminal=terminal, state=state, limit=limit
        )

    def requeue(self, rows: Sequence[Mapping[str, Any]], selection: str, now_ns: int) -> int:
        """Put rows back on their way (see :data:`REQUEUE_TARGET`), each audited in
        ``relay_requeues``. Rows in other states are left alone. Returns how many moved."""
        return self.db.requeue_registrations(rows, REQUEUE_TARGET, selection, now_ns)

    def retry_waiting_for_registry(self, version: int) -> int:
        """Queue again the rows held for the registry, judged on another registry version."""
        return self.db.retry_waiting_for_registry(WAITING_FOR_REGISTRY, version)

    # ------------------------------------------------------------------ inside tx()

    def update(self, db: GatewayDB, keys: Iterable[tuple[str, int]], **values: Any) -> None:
        """Set the same columns to the same values on rows (inside :meth:`tx`)."""
        db.set_registrations([(key, values) for key in keys])

    def registration_states(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The state of each of ``keys`` the gateway holds (absent keys are left out)."""
        return {key: row["state"] for key, row in self.db.registration_states(keys).items()}

    def still_queued(self, db: GatewayDB, keys: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of ``keys`` are still sendable (inside :meth:`tx`): another writer, such as
        a badge enrolment, may have claimed a row since it was read."""
        return db.still_sendable(keys)

    def update_each(
        self, db: GatewayDB, updates: Iterable[tuple[tuple[str, int], dict[str, Any]]]
    ) -> None:
        """Set columns per row (inside :meth:`tx`); ``remarks`` lists are stored as JSON."""
        db.set_registrations(updates)

    def flush(self, updates: Iterable[tuple[tuple[str, int], dict[str, Any]]]) -> None:
        """Commit carried results on their own (when no next batch comes to pair them with)."""
        self.db.set_registrations(updates)


__all__ = [
    "FINAL",
    "NOT_BEFORE_KEY",
    "REQUEUE_TARGET",
    "SENDABLE",
    "UNSYNCED_LIKE",
    "WAITING_FOR_REGISTRY",
    "RelayStore",
    "State",
]
