"""Every SQL fragment the relay's stages hand to :class:`gateway.relay_store.RelayStore`, in one
place and under a name that says what it selects.

The stages (:mod:`gateway.relay_reconcile`, :mod:`gateway.relay_poll`,
:mod:`gateway.relay_notify`, :mod:`gateway.relay`) call only these functions; none of them
writes SQL. Each function is meant to become one named operation of the gateway data layer.
"""

from __future__ import annotations

import sqlite3

from siteclock.gateway.relay_store import WAITING_FOR_REGISTRY, RelayStore

RECONCILE_BATCH = 500
NOTIFY_BATCH = 500
OVERDUE_BATCH = 1000
_WAITING = ",".join(f"'{s}'" for s in WAITING_FOR_REGISTRY)
_WITHOUT_VERDICT = (
    "'queued','unknown_badge','blocked_badge','unknown_workplace',"
    "'awaiting_clock_sync','submitted','ambiguous','pending'"
)


def due_ambiguous(store: RelayStore, now_ns: int) -> list[sqlite3.Row]:
    """Ambiguous rows whose search is due."""
    return store.rows("state='ambiguous' AND next_try_ns<=?", (now_ns,), RECONCILE_BATCH)


def anyone_awaits_review(store: RelayStore) -> bool:
    """Whether any row waits for a person, or for a search CIaO refuses."""
    return bool(store.rows("state='needs_review' OR search_refused_ns IS NOT NULL", (), 1))


def due_pending(store: RelayStore, now_ns: int, limit: int) -> list[sqlite3.Row]:
    """Pending registrations due for a poll, the longest waiting first."""
    return store.rows("state='pending' AND next_try_ns<=? ORDER BY next_try_ns", (now_ns,), limit)


def unnotified_verdicts(store: RelayStore) -> list[sqlite3.Row]:
    """Rows with a final verdict not yet handed to their terminal."""
    return store.rows(
        "notified=0 AND state IN ('registered','rejected','refused')", (), NOTIFY_BATCH
    )


def overdue_without_verdict(store: RelayStore, cutoff_ns: int) -> list[sqlite3.Row]:
    """Rows created before ``cutoff_ns`` still without a final verdict, not yet alerted."""
    return store.rows(
        f"state IN ({_WITHOUT_VERDICT}) AND created_ns<? AND alerted=0",
        (cutoff_ns,),
        OVERDUE_BATCH,
    )


def requeue_waiting_for_registry(store: RelayStore, db: sqlite3.Connection, version: int) -> int:
    """Rows held by a registry gap, looked at under another registry version: queued again
    (in the caller's transaction ``db``). Returns how many."""
    return db.execute(
        f"UPDATE registrations SET state='queued', next_try_ns=0 "
        f"WHERE state IN ({_WAITING}) AND registry_version<>?",
        (version,),
    ).rowcount


def any_waiting_for_registry(store: RelayStore, version: int) -> bool:
    """Whether a row held by a registry gap was looked at under another registry version."""
    return bool(store.rows(f"state IN ({_WAITING}) AND registry_version<>?", (version,), 1))
