"""Operations on the console's alerts (migration 3): raised once per key while open, resolved
with a resolution, their delivery state, and the reads the alert rules use (rejections and
remarks, sequence issues, relay alerts, open registrations of an event alert)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteclock.gateway.db.core import SQLiteCore
from siteclock.gateway.db.interface import Row


class AlertOps(SQLiteCore):
    def raise_alert(
        self, key: str, kind: str, subject: str, message: str, link: str, at_ns: int,
        *, once_ever: bool = False,
    ) -> bool:  # fmt: skip
        """Open an alert for ``key`` unless one is open (or, ``once_ever``, was ever raised:
        an event's rejection is one alert, even after a person resolved it). True if new."""
        with self._writing() as conn:
            clause = "" if once_ever else " AND resolved_ns IS NULL"
            if conn.execute(f"SELECT 1 FROM alerts WHERE key = ?{clause}", (key,)).fetchone():
                return False
            conn.execute(
                "INSERT INTO alerts(key, kind, subject, message, link, raised_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, subject, message, link, at_ns),
            )
        return True

    def resolve_alert(
        self, key: str | None, resolution: str, at_ns: int, *, by: str = "",
        alert_id: int | None = None,
    ) -> bool:  # fmt: skip
        """Resolve the open alert of ``key`` (or the one of ``alert_id``). True if it was open."""
        column, value = ("id", alert_id) if alert_id is not None else ("key", key)
        with self._writing() as conn:
            done = conn.execute(
                "UPDATE alerts SET resolved_ns = ?, resolution = ?, resolved_by = ?, "
                f"next_send_ns = 0 WHERE {column} = ? AND resolved_ns IS NULL",
                (at_ns, resolution, by, value),
            ).rowcount
        return bool(done)

    def open_alert_keys(self, prefix: str = "") -> set[str]:
        with self.reading() as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT key FROM alerts WHERE resolved_ns IS NULL AND key LIKE ?",
                    (prefix.replace("%", r"\%") + "%",),
                )
            }

    def muted_alert_keys(self, kinds: Iterable[str]) -> set[str]:
        """Keys of alerts of ``kinds`` a person resolved while their condition still held, the
        condition not seen clear since: no new alert for them until it clears."""
        wanted = list(kinds)
        with self.reading() as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT key FROM alerts WHERE resolved_by <> '' AND condition_cleared_ns "
                    f"IS NULL AND kind IN ({','.join('?' * len(wanted))})",
                    wanted,
                )
            }

    def unmute_alert(self, key: str, at_ns: int) -> None:
        """The condition of a person-resolved alert cleared: its next occurrence raises again."""
        with self._writing() as conn:
            conn.execute(
                "UPDATE alerts SET condition_cleared_ns = ? WHERE key = ? AND resolved_by <> '' "
                "AND condition_cleared_ns IS NULL",
                (at_ns, key),
            )

    def alert(self, alert_id: int) -> Row | None:
        rows = self._rows("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return rows[0] if rows else None

    def alerts_list(
        self, *, open_only: bool = True, kinds: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None, offset: int = 0, limit: int = 50,
    ) -> list[Row]:  # fmt: skip
        """Alerts newest first: open ones only by default; of ``kinds`` and about ``subjects``
        (terminals or workplaces, for a site manager) when given."""
        where, args = self._alert_filter(open_only, kinds, subjects)
        return self._rows(
            f"SELECT * FROM alerts WHERE {where} ORDER BY raised_ns DESC, id DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )

    def count_alerts(
        self, *, open_only: bool = True, kinds: Iterable[str] | None = None,
        subjects: Iterable[str] | None = None,
    ) -> int:  # fmt: skip
        where, args = self._alert_filter(open_only, kinds, subjects)
        with self.reading() as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM alerts WHERE {where}", args).fetchone()
        return int(n)

    @staticmethod
    def _alert_filter(
        open_only: bool, kinds: Iterable[str] | None, subjects: Iterable[str] | None
    ) -> tuple[str, list[Any]]:
        where, args = ["1"], []
        if open_only:
            where.append("resolved_ns IS NULL")
        for column, values in (("kind", kinds), ("subject", subjects)):
            if values is not None:
                wanted = list(values)
                where.append(f"{column} IN ({','.join('?' * len(wanted))})" if wanted else "0")
                args.extend(wanted)
        return " AND ".join(where), args

    def alert_counts(self) -> dict[tuple[str, bool], int]:
        """``{(kind, open): n}`` over every alert ever raised (the metrics)."""
        with self.reading() as conn:
            return {
                (kind, bool(is_open)): int(n)
                for kind, is_open, n in conn.execute(
                    "SELECT kind, resolved_ns IS NULL, count(*) FROM alerts GROUP BY 1, 2"
                )
            }

    # ------------------------------------------------------------------ delivery

    def alerts_to_send(self, now_ns: int, limit: int = 200) -> list[Row]:
        """Alerts whose raising or resolution has not been sent yet and whose next try is due,
        oldest first."""
        return self._rows(
            "SELECT * FROM alerts WHERE next_send_ns <= ? AND (sent_ns IS NULL OR "
            "(resolved_ns IS NOT NULL AND resolve_sent_ns IS NULL)) ORDER BY id LIMIT ?",
            (now_ns, limit),
        )

    def mark_alerts_sent(self, ids: Iterable[int], at_ns: int) -> None:
        """The alerts' pending news went out: the raising, and the resolution if there is one."""
        with self._writing() as conn:
            conn.executemany(
                "UPDATE alerts SET sent_ns = coalesce(sent_ns, ?), resolve_sent_ns = CASE WHEN "
                "resolved_ns IS NULL THEN NULL ELSE ? END, send_error = '' WHERE id = ?",
                [(at_ns, at_ns, i) for i in ids],
            )

    def alerts_send_failed(self, ids: Iterable[int], error: str, next_ns: int) -> None:
        with self._writing() as conn:
            conn.executemany(
                "UPDATE alerts SET send_attempts = send_attempts + 1, send_error = ?, "
                "next_send_ns = ? WHERE id = ?",
                [(error, next_ns, i) for i in ids],
            )

    # ------------------------------------------------------------------ what the rules read

    def alert_mark(self, name: str) -> int:
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM alert_meta WHERE key = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def save_alert_mark(self, name: str, value: int) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO alert_meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = max(value, excluded.value)",
                (name, value),
            )

    def verdict_issues_since(self, since_ns: int, limit: int = 1000) -> list[Row]:
        """Registrations rejected, refused or carrying remarks, updated at or after
        ``since_ns`` (through the partial index), oldest update first."""
        return self._rows(
            "SELECT terminal, seq, state, remarks, last_error, workplace, updated_ns "
            "FROM registrations WHERE (state IN ('rejected', 'refused') OR remarks <> '[]') "
            "AND updated_ns >= ? ORDER BY updated_ns LIMIT ?",
            (since_ns, limit),
        )

    def sequence_issues_since(self, since_ns: int, limit: int = 1000) -> list[Row]:
        """Sequence decisions with an issue decided at or after ``since_ns``, oldest first."""
        return self._rows(
            "SELECT terminal, seq, workplace, kind, ciao_type, issues, decided_ns "
            "FROM worker_sequence WHERE issues <> '' AND decided_ns >= ? "
            "ORDER BY decided_ns LIMIT ?",
            (since_ns, limit),
        )

    def registration_states(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Row]:
        """``{(terminal, seq): row}`` with state and remarks of the registrations named (one
        query per 400 keys: the relay asks this for every batch it prepares)."""
        keys = list(keys)
        found: dict[tuple[str, int], Row] = {}
        for start in range(0, len(keys), 400):
            part = keys[start : start + 400]
            wanted = ",".join("(?,?)" for _ in part)
            for row in self._rows(
                "SELECT terminal, seq, state, remarks FROM registrations "
                f"WHERE (terminal, seq) IN (VALUES {wanted})",
                [v for key in part for v in key],
            ):
                found[(row["terminal"], row["seq"])] = row
        return found

    def relay_alert_rows(self) -> list[Row]:
        """Every relay alert (open or cleared): ``cause, message, since_ns, cleared_ns``."""
        return self._rows("SELECT cause, message, since_ns, cleared_ns FROM relay_alerts")

    def waiting_registrations(self, states: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``{state: (count, oldest created_ns)}`` of registrations in ``states`` (through the
        state index: only the waiting rows are read, however many are final)."""
        wanted = list(states)
        with self.reading() as conn:
            return {
                state: (int(n), int(oldest))
                for state, n, oldest in conn.execute(
                    "SELECT state, count(*), min(created_ns) FROM registrations "
                    f"WHERE state IN ({','.join('?' * len(wanted))}) GROUP BY state",
                    wanted,
                )
            }
