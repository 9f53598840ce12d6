"""The relay's alerts, its persisted Retry-After instant, and the employer's view and requeue
of registrations (``siteclock relay show|requeue``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from siteclock.gateway.db.core import Core

NOT_BEFORE_KEY = "ciao_not_before_ns"
"""``relay_meta`` key: the latest Retry-After instant (wall ns), so a restart honours it too."""


class RelayAdminOps(Core):
    # ------------------------------------------------------------------ Retry-After

    def not_before_ns(self) -> int:
        with self.reading() as conn:
            found = conn.execute(
                "SELECT value FROM relay_meta WHERE key=?", (NOT_BEFORE_KEY,)
            ).fetchone()
        return int(found[0]) if found else 0

    def save_not_before(self, instant_ns: int) -> None:
        """Persist a Retry-After instant at once, from whichever thread learnt it: on its own
        short connection, because this one may be inside the relay's transaction on another
        thread. A later instant never gives way to an earlier one."""
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

    def raise_relay_alert(self, cause: str, message: str, now_ns: int) -> bool:
        """Open an alert for ``cause`` (True when it was not open already)."""
        with self._writing() as conn:
            row = conn.execute(
                "SELECT cleared_ns FROM relay_alerts WHERE cause=?", (cause,)
            ).fetchone()
            if row is not None and row[0] is None:
                return False
            conn.execute(
                "INSERT INTO relay_alerts(cause, message, since_ns) VALUES (?, ?, ?) "
                "ON CONFLICT(cause) DO UPDATE SET message=excluded.message, "
                "since_ns=excluded.since_ns, cleared_ns=NULL, raised=raised+1",
                (cause, message, now_ns),
            )
            return True

    def clear_relay_alert(self, cause: str, now_ns: int) -> str | None:
        """Close the open alert for ``cause``; its message, or None when none was open."""
        with self._writing() as conn:
            row = conn.execute(
                "SELECT message FROM relay_alerts WHERE cause=? AND cleared_ns IS NULL", (cause,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE relay_alerts SET cleared_ns=? WHERE cause=?", (now_ns, cause))
            return str(row[0])

    def open_relay_alerts(self) -> dict[str, str]:
        """Open alerts: cause -> message."""
        with self.reading() as conn:
            return dict(
                conn.execute("SELECT cause, message FROM relay_alerts WHERE cleared_ns IS NULL")
            )

    def relay_alert_counts(self) -> dict[str, int]:
        """How many times each cause was raised."""
        with self.reading() as conn:
            return dict(conn.execute("SELECT cause, raised FROM relay_alerts"))

    # ------------------------------------------------------------------ the employer's view

    def select_registrations(
        self,
        *,
        keys: Sequence[tuple[str, int]] = (),
        worker: str | None = None,
        terminal: str | None = None,
        state: str | None = None,
        limit: int = 100_000,
    ) -> list[sqlite3.Row]:
        """Rows (with their tap's badge and kind) matching every given criterion; ``worker``
        is a worker reference or a badge."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if keys:
            where.append("(r.terminal, r.seq) IN (VALUES " + ",".join("(?,?)" for _ in keys) + ")")
            args += [v for key in keys for v in key]
        if worker:
            where.append(
                "(r.worker_ref=? OR i.badge=? OR "
                "i.badge IN (SELECT badge FROM reg_badges WHERE worker_ref=?))"
            )
            args += [worker, worker, worker]
        if terminal:
            where.append("r.terminal=?")
            args.append(terminal)
        if state:
            where.append("r.state=?")
            args.append(state)
        return self._rows(
            "SELECT r.*, i.badge, i.kind FROM registrations r "
            "LEFT JOIN inbox i USING (terminal, seq) "
            f"WHERE {' AND '.join(where)} ORDER BY r.terminal, r.seq LIMIT ?",
            (*args, limit),
        )

    def requeue_registrations(
        self,
        rows: Sequence[Mapping[str, Any]],
        targets: Mapping[str, str],
        selection: str,
        now_ns: int,
    ) -> int:
        """Move each row still in its read state to ``targets[state]`` (rows in other states
        are left alone), forgetting its backoff and verdict marks, each move audited in
        ``relay_requeues`` with ``selection``. Returns how many moved."""
        moved = 0
        with self._writing() as conn:
            for row in rows:
                target = targets.get(row["state"])
                if target is None:
                    continue
                changed = conn.execute(
                    "UPDATE registrations SET state=?, next_try_ns=0, attempts=0, solo=0, "
                    "final_ns=NULL, notified=0, alerted=0, search_refused_ns=NULL, "
                    "ambiguous_ns=CASE WHEN ?='ambiguous' THEN ? ELSE ambiguous_ns END, "
                    "requeued_ns=?, updated_ns=? WHERE terminal=? AND seq=? AND state=?",
                    (target, target, now_ns, now_ns, now_ns, row["terminal"], row["seq"],
                     row["state"]),
                ).rowcount  # fmt: skip
                if changed:
                    conn.execute(
                        "INSERT INTO relay_requeues VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (now_ns, row["terminal"], row["seq"], row["state"], target,
                         row["last_error"], selection),
                    )  # fmt: skip
                    moved += changed
        return moved

    def requeue_audit(self) -> list[tuple[Any, ...]]:
        """``(at_ns, terminal, seq, from_state, to_state, last_error, selection)``, oldest first."""
        with self.reading() as conn:
            return conn.execute("SELECT * FROM relay_requeues ORDER BY rowid").fetchall()
