"""The relay's tables in the gateway's SQLite file: one row per inbox event on its way to CIaO.

The intake owns ``inbox`` (verified, signed events, unique on terminal+seq). The relay copies
each inbox key into ``registrations`` and walks it through these states::

    queued -> submitted -> pending -> registered | rejected
       |          |  \\-> ambiguous -> (found) pending | (not found) queued
       |          |                 \\-> needs_review (search refused for too long: a person
       |          |                     decides; never resubmitted blind)
       |          \\-> refused (a 400 naming this item: it can never be accepted as it is)
       |-> unknown_badge | blocked_badge | unknown_workplace (retried when the registry changes)
       \\-> awaiting_clock_sync (clock_unsynced, waiting for a sync point; then queued)

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

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Any

from siteclock import sqlite


class State(StrEnum):
    QUEUED = "queued"
    UNKNOWN_BADGE = "unknown_badge"  # no worker linked to this badge (yet)
    BLOCKED_BADGE = "blocked_badge"  # the badge is blocked by the employer
    UNKNOWN_WORKPLACE = "unknown_workplace"  # the registry lacks the Declaration of Works
    AWAITING_CLOCK_SYNC = "awaiting_clock_sync"  # clock_unsynced, held for a sync point
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
SENDABLE = (State.QUEUED, State.AWAITING_CLOCK_SYNC)
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL,
  state TEXT NOT NULL,
  ciao_id TEXT, validity TEXT, remarks TEXT NOT NULL DEFAULT '[]',
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
  solo INTEGER NOT NULL DEFAULT 0,
  registry_version INTEGER NOT NULL DEFAULT -1,
  worker_ref TEXT, employer TEXT, workplace TEXT, reg_date TEXT, ciao_type TEXT,
  created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
  submitted_ns INTEGER, final_ns INTEGER,
  next_try_ns INTEGER NOT NULL DEFAULT 0,
  alerted INTEGER NOT NULL DEFAULT 0, notified INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (terminal, seq));
CREATE INDEX IF NOT EXISTS registrations_state ON registrations(state, terminal, seq);
CREATE INDEX IF NOT EXISTS registrations_ciao_id ON registrations(ciao_id);
CREATE INDEX IF NOT EXISTS registrations_unnotified ON registrations(notified, state);
CREATE TABLE IF NOT EXISTS relay_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS relay_alerts(
  cause TEXT PRIMARY KEY, message TEXT NOT NULL, since_ns INTEGER NOT NULL,
  cleared_ns INTEGER, raised INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS relay_requeues(
  at_ns INTEGER NOT NULL, terminal TEXT NOT NULL, seq INTEGER NOT NULL,
  from_state TEXT NOT NULL, to_state TEXT NOT NULL, last_error TEXT NOT NULL,
  selection TEXT NOT NULL);
"""

# Columns added after the first release: a database created before them gets them at open.
# All nullable, so existing rows stay valid and older relays reading ``*`` are unaffected.
ADDED_COLUMNS = {
    "terminal_wall_ns": "INTEGER",  # the terminal's time of a clock_unsynced event
    "corrected_wall_ns": "INTEGER",  # the time submitted instead (NULL: terminal time used)
    "clock_note": "TEXT",  # why, in words, for the employer's review
    "problem": "TEXT",  # the last problem details (JSON: status, type, title, detail, issues)
    "ambiguous_ns": "INTEGER",  # when the row became ambiguous
    "search_refused_ns": "INTEGER",  # first time the search for it was refused (400)
    "requeued_ns": "INTEGER",  # last ``siteclock relay requeue`` of the row
}

NOT_BEFORE_KEY = "ciao_not_before_ns"
"""``relay_meta`` key: the latest Retry-After instant (wall ns), so a restart honours it too."""

UNSYNCED_LIKE = '%"clock_unsynced"%'
"""``inbox.flags`` is a JSON list of text: this LIKE finds the flag without parsing JSON."""


class RelayStore:
    """SQL for the relay. One connection, used by one thread at a time (the relay's)."""

    def __init__(self, db_path: Path | str) -> None:
        self.path = str(db_path)
        self.db = sqlite.connect(db_path, schema=SCHEMA, busy_timeout_s=10.0)
        try:
            self._add_columns()
        except BaseException:
            self.db.close()
            raise

    def _add_columns(self) -> None:
        """Bring an older ``registrations`` table up to date (idempotent; one writer at a time,
        so two relays opening the same old file never both add a column)."""
        with self.tx() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(registrations)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    db.execute(f"ALTER TABLE registrations ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction on the relay's connection."""
        return sqlite.immediate(self.db)

    # ------------------------------------------------------------------ intake

    def take_new(self, now_ns: int, *, full: bool) -> int:
        """Copy new inbox keys in as ``queued``. ``full`` rescans the whole inbox (cheap, and it
        catches rows a rowid watermark could miss); otherwise only rows past the watermark."""
        try:
            row = self.db.execute("SELECT value FROM relay_meta WHERE key='inbox_rowid'").fetchone()
            mark = 0 if full or row is None else row[0]
            top = self.db.execute("SELECT max(rowid) FROM inbox").fetchone()[0] or 0
            if top <= mark:
                return 0  # nothing new: no write transaction, no fsync
            with self.tx() as db:
                cur = db.execute(
                    "INSERT OR IGNORE INTO registrations(terminal, seq, state, created_ns, "
                    "updated_ns) SELECT terminal, seq, CASE WHEN flags LIKE '%\"selftest\"%' "
                    "THEN 'selftest' ELSE 'queued' END, received_ns, ? FROM inbox "
                    "WHERE rowid > ?",
                    (now_ns, mark),
                )
                top = db.execute("SELECT max(rowid) FROM inbox").fetchone()[0] or 0
                db.execute("INSERT OR REPLACE INTO relay_meta VALUES ('inbox_rowid', ?)", (top,))
                return cur.rowcount
        except sqlite3.OperationalError as exc:
            if "no such table: inbox" in str(exc):
                return 0  # the intake has not created it yet
            raise

    def recover_submitted(self, now_ns: int) -> int:
        """After a crash, a ``submitted`` row may or may not have reached CIaO."""
        with self.tx() as db:
            return db.execute(
                "UPDATE registrations SET state='ambiguous', next_try_ns=0, updated_ns=?, "
                "last_error='relay stopped while submitting' WHERE state='submitted'",
                (now_ns,),
            ).rowcount

    # ------------------------------------------------------------------ queries

    def queued(self, now_ns: int, limit: int) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                "SELECT r.terminal, r.seq, r.solo, r.attempts, r.created_ns, i.kind, i.badge, "
                "i.workplace, i.wall_ns, "
                # The signed body only for clock_unsynced events: the rest never pay for it.
                "CASE WHEN i.flags LIKE ? THEN i.body END AS unsynced_body "
                "FROM registrations r JOIN inbox i USING (terminal, seq) "
                "WHERE r.state IN ('queued','awaiting_clock_sync') AND r.next_try_ns<=? "
                "ORDER BY r.terminal, r.seq LIMIT ?",
                (UNSYNCED_LIKE, now_ns, limit),
            ).fetchall()
        finally:
            self.db.row_factory = None

    def rows(self, where: str, args: Sequence[Any] = (), limit: int = 1000) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                f"SELECT * FROM registrations WHERE {where} LIMIT ?", (*args, limit)
            ).fetchall()
        finally:
            self.db.row_factory = None

    def claimed_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        sql = f"SELECT ciao_id FROM registrations WHERE ciao_id IN ({marks})"
        return {r[0] for r in self.db.execute(sql, ids)}

    def counts(self) -> dict[str, int]:
        """Rows per state: what the dashboard shows and the tests check."""
        return dict(self.db.execute("SELECT state, count(*) FROM registrations GROUP BY state"))

    def get(self, terminal: str, seq: int) -> sqlite3.Row | None:
        found = self.rows("terminal=? AND seq=?", (terminal, seq), 1)
        return found[0] if found else None

    # ------------------------------------------------------------------ Retry-After

    def not_before_ns(self) -> int:
        row = self.db.execute("SELECT value FROM relay_meta WHERE key=?", (NOT_BEFORE_KEY,))
        found = row.fetchone()
        return int(found[0]) if found else 0

    def save_not_before(self, instant_ns: int) -> None:
        """Persist a Retry-After instant at once, from whichever thread learnt it (its own
        short connection: the relay's may be inside a transaction on another thread)."""
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            con.execute(
                "INSERT INTO relay_meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value=max(value, excluded.value)",
                (NOT_BEFORE_KEY, instant_ns),
            )
        finally:
            con.close()

    # ------------------------------------------------------------------ alerts

    def raise_alert(self, cause: str, message: str, now_ns: int) -> bool:
        """Open an alert for ``cause`` (True when it was not open already)."""
        with self.tx() as db:
            row = db.execute(
                "SELECT cleared_ns FROM relay_alerts WHERE cause=?", (cause,)
            ).fetchone()
            if row is not None and row[0] is None:
                return False
            db.execute(
                "INSERT INTO relay_alerts(cause, message, since_ns) VALUES (?, ?, ?) "
                "ON CONFLICT(cause) DO UPDATE SET message=excluded.message, "
                "since_ns=excluded.since_ns, cleared_ns=NULL, raised=raised+1",
                (cause, message, now_ns),
            )
            return True

    def clear_alert(self, cause: str, now_ns: int) -> str | None:
        """Close the open alert for ``cause``; its message, or None when none was open."""
        with self.tx() as db:
            row = db.execute(
                "SELECT message FROM relay_alerts WHERE cause=? AND cleared_ns IS NULL", (cause,)
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE relay_alerts SET cleared_ns=? WHERE cause=?", (now_ns, cause))
            return str(row[0])

    def open_alerts(self) -> dict[str, str]:
        """Open alerts: cause -> message."""
        return dict(
            self.db.execute("SELECT cause, message FROM relay_alerts WHERE cleared_ns IS NULL")
        )

    # ------------------------------------------------------------------ requeue

    def select(
        self,
        *,
        keys: Sequence[tuple[str, int]] = (),
        worker: str | None = None,
        terminal: str | None = None,
        state: str | None = None,
        limit: int = 100_000,
    ) -> list[sqlite3.Row]:
        """Rows matching every given criterion (``worker``: a worker reference or a badge)."""
        where: list[str] = ["1"]
        args: list[Any] = []
        if keys:
            where.append("(r.terminal, r.seq) IN (VALUES " + ",".join("(?,?)" for _ in keys) + ")")
            args += [v for key in keys for v in key]
        if worker:
            clause = "r.worker_ref=? OR i.badge=?"
            args += [worker, worker]
            if self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='reg_badges'"
            ).fetchone():
                clause += " OR i.badge IN (SELECT badge FROM reg_badges WHERE worker_ref=?)"
                args.append(worker)
            where.append(f"({clause})")
        if terminal:
            where.append("r.terminal=?")
            args.append(terminal)
        if state:
            where.append("r.state=?")
            args.append(state)
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                "SELECT r.*, i.badge, i.kind FROM registrations r "
                "LEFT JOIN inbox i USING (terminal, seq) "
                f"WHERE {' AND '.join(where)} ORDER BY r.terminal, r.seq LIMIT ?",
                (*args, limit),
            ).fetchall()
        finally:
            self.db.row_factory = None

    def requeue(self, rows: Sequence[sqlite3.Row], selection: str, now_ns: int) -> int:
        """Put rows back on their way (see :data:`REQUEUE_TARGET`), each audited in
        ``relay_requeues``. Rows in other states are left alone. Returns how many moved."""
        moved = 0
        with self.tx() as db:
            for row in rows:
                target = REQUEUE_TARGET.get(State(row["state"]))
                if target is None:
                    continue
                changed = db.execute(
                    "UPDATE registrations SET state=?, next_try_ns=0, attempts=0, solo=0, "
                    "final_ns=NULL, notified=0, alerted=0, search_refused_ns=NULL, "
                    "ambiguous_ns=CASE WHEN ?='ambiguous' THEN ? ELSE ambiguous_ns END, "
                    "requeued_ns=?, updated_ns=? WHERE terminal=? AND seq=? AND state=?",
                    (
                        target,
                        target,
                        now_ns,
                        now_ns,
                        now_ns,
                        row["terminal"],
                        row["seq"],
                        row["state"],
                    ),
                ).rowcount
                if changed:
                    db.execute(
                        "INSERT INTO relay_requeues VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            now_ns,
                            row["terminal"],
                            row["seq"],
                            row["state"],
                            target,
                            row["last_error"],
                            selection,
                        ),
                    )
                    moved += changed
        return moved

    # ------------------------------------------------------------------ updates

    def update(
        self, db: sqlite3.Connection, keys: Iterable[tuple[str, int]], **values: Any
    ) -> None:
        """Set the same columns to the same values on rows (inside :meth:`tx`)."""
        self.update_each(db, [(key, values) for key in keys])

    def still_queued(
        self, db: sqlite3.Connection, keys: Iterable[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Which of ``keys`` are still sendable (inside :meth:`tx`): another writer, such as
        a badge enrolment, may have claimed a row since it was read."""
        keys = list(keys)
        if not keys:
            return set()
        wanted = ",".join("(?,?)" for _ in keys)
        found = db.execute(
            f"SELECT terminal, seq FROM registrations "
            f"WHERE state IN ('queued','awaiting_clock_sync') "
            f"AND (terminal, seq) IN (VALUES {wanted})",
            [v for key in keys for v in key],
        )
        return {(terminal, seq) for terminal, seq in found}

    def update_each(
        self, db: sqlite3.Connection, updates: Iterable[tuple[tuple[str, int], dict[str, Any]]]
    ) -> None:
        """Set columns per row (inside :meth:`tx`); ``remarks`` lists are stored as JSON.

        Rows that set the same columns share one ``executemany``: a batch of 200 results is
        one statement, not 200.
        """
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for (terminal, seq), values in updates:
            remarks = values.get("remarks")
            if remarks is not None and not isinstance(remarks, str):
                text = json.dumps(list(remarks)) if remarks else "[]"
                values = {**values, "remarks": text}
            groups.setdefault(tuple(values), []).append((*values.values(), terminal, seq))
        for columns, params in groups.items():
            sets = ", ".join(f"{c}=?" for c in columns)
            db.executemany(f"UPDATE registrations SET {sets} WHERE terminal=? AND seq=?", params)
