"""The relay's tables in the gateway's SQLite file: one row per inbox event on its way to CIaO.

The intake owns ``inbox`` (verified, signed events, unique on terminal+seq). The relay copies
each inbox key into ``registrations`` and walks it through these states::

    queued -> submitted -> pending -> registered | rejected
       |          |  \\-> ambiguous -> (found) pending | (not found) queued
       |          \\-> dead (permanent refusal, or too many attempts)
       \\-> unresolved (badge or workplace unknown; retried when the registry changes)

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
    UNRESOLVED = "unresolved"
    SUBMITTED = "submitted"
    AMBIGUOUS = "ambiguous"
    PENDING = "pending"  # created at CIaO, validity pending
    REGISTERED = "registered"  # final: valid
    REJECTED = "rejected"  # final: invalid, or not created
    DEAD = "dead"  # final: never accepted (permanent refusal); for the employer to see
    SELFTEST = "selftest"  # an installer's check tap: kept, never registered with the NSSO
    ENROLMENT = "enrolment"  # a badge-enrolment tap (provisioning.badge_enrolment): never sent


FINAL = frozenset({State.REGISTERED, State.REJECTED, State.DEAD})

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
"""

# Columns added after the first release: a database created before them gets them at open.
# All nullable, so existing rows stay valid and older relays reading ``*`` are unaffected.
ADDED_COLUMNS = {
    "terminal_wall_ns": "INTEGER",  # the terminal's time of a clock_unsynced event
    "corrected_wall_ns": "INTEGER",  # the time submitted instead (NULL: terminal time used)
    "clock_note": "TEXT",  # why, in words, for the employer's review
}

UNSYNCED_LIKE = '%"clock_unsynced"%'
"""``inbox.flags`` is a JSON list of text: this LIKE finds the flag without parsing JSON."""


class RelayStore:
    """SQL for the relay. One connection, used by one thread at a time (the relay's)."""

    def __init__(self, db_path: Path | str) -> None:
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
                "WHERE r.state='queued' AND r.next_try_ns<=? ORDER BY r.terminal, r.seq LIMIT ?",
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

    # ------------------------------------------------------------------ updates

    def update(
        self, db: sqlite3.Connection, keys: Iterable[tuple[str, int]], **values: Any
    ) -> None:
        """Set the same columns to the same values on rows (inside :meth:`tx`)."""
        self.update_each(db, [(key, values) for key in keys])

    def still_queued(
        self, db: sqlite3.Connection, keys: Iterable[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Which of ``keys`` are still ``queued`` (inside :meth:`tx`): another writer, such as
        a badge enrolment, may have claimed a row since it was read."""
        keys = list(keys)
        if not keys:
            return set()
        wanted = ",".join("(?,?)" for _ in keys)
        found = db.execute(
            f"SELECT terminal, seq FROM registrations WHERE state='queued' "
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
