"""The relay stages' reads of the gateway database, under names that say what they select.

The stages (:mod:`gateway.relay_reconcile`, :mod:`gateway.relay_poll`,
:mod:`gateway.relay_notify`, :mod:`gateway.relay_submit`) call only these functions; each is one
named operation of the gateway data layer (:mod:`siteclock.gateway.db`), with the batch sizes
and state sets the relay uses. No SQL here.
"""

from __future__ import annotations

from typing import Any

from siteclock.gateway.relay_store import RelayStore, State

RECONCILE_BATCH = 500
NOTIFY_BATCH = 500
OVERDUE_BATCH = 1000
WITHOUT_VERDICT = (
    State.QUEUED,
    State.UNKNOWN_BADGE,
    State.BLOCKED_BADGE,
    State.UNKNOWN_WORKPLACE,
    State.AWAITING_CLOCK_SYNC,
    State.AWAITING_EARLIER,
    State.SUBMITTED,
    State.AMBIGUOUS,
    State.PENDING,
)
"""States in which an event still waits for its verdict (``needs_review`` has its own alert)."""


def due_ambiguous(store: RelayStore, now_ns: int) -> list[Any]:
    """Ambiguous rows whose search is due."""
    return store.db.registrations_in([State.AMBIGUOUS], due_ns=now_ns, limit=RECONCILE_BATCH)


def anyone_awaits_review(store: RelayStore) -> bool:
    """Whether any row waits for a person, or for a search CIaO refuses."""
    return store.db.has_unreconciled()


def due_pending(store: RelayStore, now_ns: int, limit: int) -> list[Any]:
    """Pending registrations due for a poll, the longest waiting first."""
    return store.db.registrations_in([State.PENDING], due_ns=now_ns, limit=limit)


def unnotified_verdicts(store: RelayStore) -> list[Any]:
    """Rows with a final verdict not yet handed to their terminal."""
    return store.db.unnotified_verdicts(NOTIFY_BATCH)


def overdue_without_verdict(store: RelayStore, cutoff_ns: int) -> list[Any]:
    """Rows created before ``cutoff_ns`` still without a final verdict, not yet alerted."""
    return store.db.overdue(WITHOUT_VERDICT, cutoff_ns, OVERDUE_BATCH)
