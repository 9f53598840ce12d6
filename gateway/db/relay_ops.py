"""Operations of the CIaO relay: one ``registrations`` row per inbox event on its way to CIaO,
its alerts, the requeues done by hand and the Retry-After instant that outlives a restart.

The states and what moves a row between them are documented in ``gateway/relay_store.py``;
here is how each move is written. Every write joins the caller's ``atomic()`` block when there
is one, so the relay can mark a batch submitted and keep its sequence decisions in one commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siteclock.gateway.db.core import Core

SENDABLE = ("queued", "awaiting_clock_sync", "awaiting_earlier")
_SENDABLE_SQL = ",".join(f"'{state}'" for state in SENDABLE)
UNSYNCED_LIKE = '%"clock_unsynced"%'
"""``inbox.flags`` is a JSON list of text: this LIKE finds the flag without parsing JSON."""

Update = tuple[tuple[str, int], Mapping[str, Any]]
"""``((terminal, seq), {column: value})``: the columns to set on one registration."""


class RelayOps(Core):
    # ------------------------------------------------------------------ new and recovered rows

    def take_new_events(self, now_ns: int, *, full: bool) -> int:
        """Copy new inbox keys in as ``queued`` (a self-test tap as ``selftest``). ``full``
        rescans the whole inbox (cheap, and it catches rows a rowid watermark could miss);
        otherwise only rows past the watermark. Returns how many rows were added."""
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM relay_meta WHERE key='inbox_rowid'").fetchone()
            mark = 0 if full or row is None else row[0]
            top = conn.execute("SELECT max(rowid) FROM inbox").fetchone()[0] or 0
            if top <= mark:
                return 0  # nothing new: no write transaction, no fsync
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO registrations(terminal, seq, state, created_ns, "
                "updated_ns) SELECT terminal, seq, CASE WHEN flags LIKE '%\"selftest\"%' "
                "THEN 'selftest' ELSE 'queued' END, received_ns, ? FROM inbox "
                "WHERE rowid > ?",
                (now_ns, mark),
            )
            top = conn.execute("SELECT max(rowid) FROM inbox").fetchone()[0] or 0
            conn.execute("INSERT OR REPLACE INTO relay_meta VALUES ('inbox_rowid', ?)", (top,))
            return cur.rowcount

    def recover_submitted(self, now_ns: int, submitters: Iterable[str | None] | None = None) -> int:
        """A ``submitted`` row whose relay is gone may or may not have reached CIaO: it becomes
        ``ambiguous`` (searched for before anything is sent again). Only the rows of
        ``submitters`` (relay instance ids; ``None`` for rows marked before instances were
        recorded), or every ``submitted`` row when not given. Returns how many."""
        where, args = "state='submitted'", []
        if submitters is not None:
            wanted = set(submitters)
            named = sorted(s for s in wanted if s is not None)
            terms = [f"submitted_by IN ({','.join('?' * len(named))})"] if named else []
            if None in wanted:
                terms.append("submitted_by IS NULL")
            if not terms:
                return 0
            where += f" AND ({' OR '.join(terms)})"
            args = named
        with self._writing() as conn:
            return conn.execute(
                "UPDATE registrations SET state='ambiguous', next_try_ns=0, updated_ns=?, "
                f"last_error='relay stopped while submitting' WHERE {where}",
                (now_ns, *args),
            ).rowcount

    def submitters(self) -> set[str | None]:
        """The relay instances that have rows ``submitted`` now (``None``: rows marked before
        instances were recorded). Read through the state index: only in-flight rows."""
        with self.reading() as conn:
            return {
                by
                for (by,) in conn.execute(
                    "SELECT DISTINCT submitted_by FROM registrations WHERE state='submitted'"
                )
            }

    # ------------------------------------------------------------------ reads

    def sendable(self, now_ns: int, limit: int) -> list[sqlite3.Row]:
        """Due sendable rows (:data:`SENDABLE`) with their inbox event, in key order."""
        return self._rows(
            "SELECT r.terminal, r.seq, r.solo, r.attempts, r.created_ns, i.kind, i.badge, "
            "i.workplace, i.wall_ns, "
            # The signed body only for clock_unsynced events: the rest never pay for it.
            "CASE WHEN i.flags LIKE ? THEN i.body END AS unsynced_body "
            "FROM registrations r JOIN inbox i USING (terminal, seq) "
            f"WHERE r.state IN ({_SENDABLE_SQL}) AND r.next_try_ns<=? "
            "ORDER BY r.terminal, r.seq LIMIT ?",
            (UNSYNCED_LIKE, now_ns, limit),
        )

    def _registrations_where(
        self, where: str, args: Sequence[Any] = (), limit: int = 1000
    ) -> list[sqlite3.Row]:
        """Rows matching an SQL condition written by the named reads of this module only."""
        return self._rows(f"SELECT * FROM registrations WHERE {where} LIMIT ?", (*args, limit))

    def registration(self, terminal: str, seq: int) -> sqlite3.Row | None:
        found = self._registrations_where("terminal=? AND seq=?", (terminal, seq), 1)
        return found[0] if found else None

    def registrations_in(
        self, states: Sequence[str], *, due_ns: int | None = None, limit: int = 1000
    ) -> list[sqlite3.Row]:
        """Rows in ``states`` (due by ``due_ns`` when given, soonest first)."""
        marks = ",".join("?" * len(states))
        where, args = f"state IN ({marks})", [*states]
        if due_ns is not None:
            where += " AND next_try_ns<=? ORDER BY next_try_ns"
            args.append(due_ns)
        return self._registrations_where(where, args, limit)

    def unnotified_verdicts(self, limit: int) -> list[sqlite3.Row]:
        """Final rows whose verdict the terminal has not been sent yet."""
        return self._registrations_where(
            "notified=0 AND state IN ('registered','rejected','refused')", (), limit
        )

    def overdue(self, states: Sequence[str], created_before_ns: int, limit: int) -> list[Any]:
        """Unalerted rows in ``states`` created before the cutoff (no verdict in time)."""
        marks = ",".join("?" * len(states))
        return self._registrations_where(
            f"state IN ({marks}) AND created_ns<? AND alerted=0",
            (*states, created_before_ns),
            limit,
        )

    def has_unreconciled(self) -> bool:
        """Whether a row waits for a person (``needs_review``) or for a search CIaO refused."""
        with self.reading() as conn:
            found = conn.execute(
                "SELECT 1 FROM registrations "
                "WHERE state='needs_review' OR search_refused_ns IS NOT NULL LIMIT 1"
            ).fetchone()
        return found is not None

    def claimed_ciao_ids(self, ids: Iterable[str]) -> set[str]:
        """Which CIaO ids already belong to a registration (never adopt one twice)."""
        ids = list(ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        with self.reading() as conn:
            sql = f"SELECT ciao_id FROM registrations WHERE ciao_id IN ({marks})"
            return {r[0] for r in conn.execute(sql, ids)}

    def registration_counts(self) -> dict[str, int]:
        """Rows per state: what the dashboard shows and the tests check."""
        with self.reading() as conn:
            return dict(conn.execute("SELECT state, count(*) FROM registrations GROUP BY state"))

    def max_attempts(self) -> int:
        with self.reading() as conn:
            return conn.execute("SELECT max(attempts) FROM registrations").fetchone()[0] or 0

    # ------------------------------------------------------------------ state changes

    def still_sendable(self, keys: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of ``keys`` are still sendable: another writer, such as a badge enrolment,
        may have claimed a row since it was read. Call it inside the ``atomic()`` block that
        marks them submitted. On a backend with row locks (:attr:`CLAIM_LOCK`) it is the
        claim: rows another writer holds are skipped, and the rows found stay locked until the
        block commits, so no two gateways' relays submit one row."""
        keys = list(keys)
        if not keys:
            return set()
        wanted = ",".join("(?,?)" for _ in keys)
        with self._writing() as conn:
            found = conn.execute(
                f"SELECT terminal, seq FROM registrations "
                f"WHERE state IN ({_SENDABLE_SQL}) "
                f"AND (terminal, seq) IN (VALUES {wanted}){self.CLAIM_LOCK}",
                [v for key in keys for v in key],
            )
            return {(terminal, seq) for terminal, seq in found}

    def set_registrations(self, updates: Iterable[Update]) -> None:
        """Set columns per row: marking submitted, recording a verdict or a failure, adopting
        a CIaO id found by search, ``notified``/``alerted``. ``remarks`` lists are stored as
        JSON. Rows that set the same columns share one statement (a batch of 200 results is
        one ``executemany``, not 200)."""
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for (terminal, seq), values in updates:
            remarks = values.get("remarks")
            if remarks is not None and not isinstance(remarks, str):
                text = json.dumps(list(remarks)) if remarks else "[]"
                values = {**values, "remarks": text}
            groups.setdefault(tuple(values), []).append((*values.values(), terminal, seq))
        if not groups:
            return
        with self._writing() as conn:
            for columns, params in groups.items():
                sets = ", ".join(f"{c}=?" for c in columns)
                conn.executemany(
                    f"UPDATE registrations SET {sets} WHERE terminal=? AND seq=?", params
                )

    def retry_waiting_for_registry(self, states: Sequence[str], version: int) -> int:
        """Queue again the rows held for the registry (unknown badge...) that were judged on
        another registry version; returns how many."""
        marks = ",".join("?" * len(states))
        with self.reading() as conn:
            if not conn.execute(
                f"SELECT 1 FROM registrations WHERE state IN ({marks}) AND registry_version<>? "
                "LIMIT 1",
                (*states, version),
            ).fetchone():
                return 0  # nothing to do: no write transaction
        with self._writing() as conn:
            return conn.execute(
                f"UPDATE registrations SET state='queued', next_try_ns=0 "
                f"WHERE state IN ({marks}) AND registry_version<>?",
                (*states, version),
            ).rowcount
