"""Operations on terminal health: online/offline with the moment it changed, the last heartbeat's
figures, the sweeper's deadlines, refusals per terminal and reason, the terminals page, and the
resolved marker of security alerts (migration 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from siteclock.gateway.db.core import SQLiteCore
from siteclock.gateway.db.interface import Row

HEALTH_FIGURES = (
    "heartbeat_s", "queue_depth", "oldest_unsent_age_s", "clock_synced", "clock_maxerror_us",
    "clock_offset_ms", "reader", "disk_free_mb", "version", "alerts",
)  # fmt: skip
"""The heartbeat's figures kept per terminal (a ``terminal_health`` column each)."""

_COLUMNS = (
    "t.id AS terminal, t.workplace, h.online, h.changed_ns, h.reason, h.heartbeat_ns, h.due_ns, "
    + ", ".join(f"h.{n}" for n in HEALTH_FIGURES)
)
"""An active terminal with its health, one name per column (NULLs when never heard from)."""

STATES = ("online", "offline", "never")
"""How the terminals page filters: online, offline, or never heard from."""


def _page_filter(
    workplaces: Sequence[str] | None, state: str | None, search: str | None
) -> tuple[str, list[Any]]:
    where, args = ["t.status = 'active'"], []
    if workplaces is not None:
        where.append(f"t.workplace IN ({','.join('?' * len(workplaces))})" if workplaces else "0")
        args.extend(workplaces)
    if state == "online":
        where.append("h.online = 1")
    elif state == "offline":
        where.append("h.online = 0")
    elif state == "never":
        where.append("h.terminal IS NULL")
    elif state is not None:
        raise ValueError(f"state must be one of {STATES}")
    if search:
        where.append("(t.id LIKE ? OR t.workplace LIKE ?)")
        args.extend([f"%{search}%"] * 2)
    return " AND ".join(where), args


class HealthOps(SQLiteCore):
    def save_terminal_online(
        self, terminal: str, at_ns: int, due_ns: int, figures: Mapping[str, Any]
    ) -> bool:
        """Record an online heartbeat; True when the terminal was offline or never seen."""
        return bool(self.save_terminals_online([(terminal, at_ns, due_ns, figures)]))

    def save_terminals_online(
        self, beats: Sequence[tuple[str, int, int, Mapping[str, Any]]]
    ) -> list[str]:
        """Record online heartbeats ``(terminal, at_ns, due_ns, figures)``, in order (a
        terminal's later one wins): one read and one upsert statement for all. Returns the
        terminals that were offline or never seen (each once)."""
        terminals = list(dict.fromkeys(terminal for terminal, _, _, _ in beats))
        was_online: dict[str, int] = {}
        with self._writing() as conn:
            for i in range(0, len(terminals), 500):
                chunk = terminals[i : i + 500]
                was_online.update(
                    conn.execute(
                        "SELECT terminal, online FROM terminal_health "
                        f"WHERE terminal IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
            conn.executemany(
                "INSERT INTO terminal_health(terminal, online, changed_ns, reason, heartbeat_ns, "
                f"due_ns, {', '.join(HEALTH_FIGURES)}) "
                f"VALUES (?, 1, ?, '', ?, ?, {', '.join('?' * len(HEALTH_FIGURES))}) "
                "ON CONFLICT(terminal) DO UPDATE SET online = 1, reason = '', "
                "changed_ns = CASE WHEN online = 1 THEN changed_ns ELSE excluded.changed_ns END, "
                "heartbeat_ns = excluded.heartbeat_ns, due_ns = excluded.due_ns, "
                + ", ".join(f"{n} = excluded.{n}" for n in HEALTH_FIGURES),
                [
                    (terminal, at_ns, at_ns, due_ns, *(figures.get(n) for n in HEALTH_FIGURES))
                    for terminal, at_ns, due_ns, figures in beats
                ],
            )
        return [terminal for terminal in terminals if not was_online.get(terminal)]

    def save_terminal_offline(self, terminal: str, at_ns: int, reason: str) -> bool:
        """Mark a terminal offline (its Last Will, a clean stop, or silence); True when it was
        online (the figures of its last heartbeat are kept for the page)."""
        with self._writing() as conn:
            was = conn.execute(
                "SELECT online FROM terminal_health WHERE terminal = ?", (terminal,)
            ).fetchone()
            if was is not None and not was[0]:
                return False
            conn.execute(
                "INSERT INTO terminal_health(terminal, online, changed_ns, reason) "
                "VALUES (?, 0, ?, ?) ON CONFLICT(terminal) DO UPDATE SET online = 0, "
                "changed_ns = excluded.changed_ns, reason = excluded.reason",
                (terminal, at_ns, reason),
            )
        return was is not None

    def silent_terminals(self, now_ns: int, limit: int = 1000) -> list[tuple[str, float | None]]:
        """``(terminal, heartbeat_s)`` of terminals marked online whose next heartbeat is
        overdue (``due_ns`` passed), most overdue first."""
        with self.reading() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT terminal, heartbeat_s FROM terminal_health WHERE online = 1 "
                    "AND due_ns < ? ORDER BY due_ns LIMIT ?",
                    (now_ns, limit),
                )
            ]

    def terminal_health(self, terminal: str) -> Row | None:
        rows = self._rows("SELECT * FROM terminal_health WHERE terminal = ?", (terminal,))
        return rows[0] if rows else None

    def active_terminal_health(self) -> list[Row]:
        """Every active terminal with its health (NULL columns when never heard from): what
        the alert rules and the metrics read, one row each."""
        return self._rows(
            f"SELECT {_COLUMNS} FROM terminals t "
            "LEFT JOIN terminal_health h ON h.terminal = t.id WHERE t.status = 'active' "
            "ORDER BY t.id"
        )

    def terminals_needing_attention(self, backlog_age_s: float, disk_low_mb: float) -> list[Row]:
        """The active terminals whose health row shows something an alert rule looks at
        (offline, a backlog older than ``backlog_age_s``, an unsynced clock, a reader fault,
        less than ``disk_low_mb`` free or a disk code), with the columns of
        :meth:`active_terminal_health`. The alert rules run every few seconds: at 20,000
        terminals reading every row each time cost the gateway 2 % of a core, when a healthy
        fleet has next to nothing to show."""
        return self._rows(
            f"SELECT {_COLUMNS} FROM terminals t "
            "JOIN terminal_health h ON h.terminal = t.id WHERE t.status = 'active' AND "
            "(h.online = 0 OR h.oldest_unsent_age_s > ? OR h.clock_synced = 0 "
            "OR (h.reader IS NOT NULL AND h.reader <> 'ok') OR h.disk_free_mb < ? "
            "OR h.alerts LIKE '%disk_low%' OR h.alerts LIKE '%disk_full%') ORDER BY t.id",
            (backlog_age_s, disk_low_mb),
        )

    # ------------------------------------------------------------------ refusals

    def add_refusals(self, counts: Mapping[tuple[str, str], int], at_ns: int) -> None:
        """Add ``{(terminal, reason): n}`` to the refusals counted per terminal."""
        with self._writing() as conn:
            conn.executemany(
                "INSERT INTO terminal_refusals VALUES (?, ?, ?, ?) ON CONFLICT(terminal, reason) "
                "DO UPDATE SET count = count + excluded.count, last_ns = excluded.last_ns",
                [(t, r, n, at_ns) for (t, r), n in counts.items()],
            )

    def terminal_refusals(self, terminals: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{terminal: {reason: count}}`` for the terminals given."""
        found: dict[str, dict[str, int]] = {}
        with self.reading() as conn:
            for i in range(0, len(terminals), 500):
                chunk = list(terminals[i : i + 500])
                for terminal, reason, count in conn.execute(
                    "SELECT terminal, reason, count FROM terminal_refusals "
                    f"WHERE terminal IN ({','.join('?' * len(chunk))})",
                    chunk,
                ):
                    found.setdefault(terminal, {})[reason] = int(count)
        return found

    def refusal_totals(self) -> dict[str, int]:
        """Refusals by reason over every terminal (the metrics' ``refused`` counter)."""
        with self.reading() as conn:
            return {
                r: int(n)
                for r, n in conn.execute(
                    "SELECT reason, sum(count) FROM terminal_refusals GROUP BY reason"
                )
            }

    # ------------------------------------------------------------------ the terminals page

    def terminals_page(
        self,
        *,
        workplaces: Sequence[str] | None = None,
        state: str | None = None,
        search: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[Row]:
        """One page of active terminals with their health, offline ones first, then by id.
        ``workplaces`` None: all (an administrator); a list: only those (a site manager)."""
        where, args = _page_filter(workplaces, state, search)
        return self._rows(
            f"SELECT {_COLUMNS} FROM terminals t "
            f"LEFT JOIN terminal_health h ON h.terminal = t.id WHERE {where} "
            "ORDER BY coalesce(h.online, 0), t.id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )

    def terminals_summary(
        self, *, workplaces: Sequence[str] | None = None, search: str | None = None
    ) -> dict[str, int]:
        """``{"online": n, "offline": n, "never": n}`` of the active terminals in scope."""
        where, args = _page_filter(workplaces, None, search)
        summary = dict.fromkeys(STATES, 0)
        with self.reading() as conn:
            for online, n in conn.execute(
                "SELECT h.online, count(*) FROM terminals t LEFT JOIN terminal_health h "
                f"ON h.terminal = t.id WHERE {where} GROUP BY h.online",
                args,
            ):
                summary["never" if online is None else "online" if online else "offline"] = n
        return summary

    # ------------------------------------------------------------------ security alerts

    def open_security_alerts(self, after_id: int = 0, limit: int = 1000) -> list[Row]:
        """Security alerts not resolved yet, oldest first, from ``after_id`` on."""
        return self._rows(
            "SELECT id, at_ns, terminal, seq, kind, detail FROM security_alerts "
            "WHERE resolved_ns IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )

    def resolve_security_alert(self, alert_id: int, resolution: str, by: str, at_ns: int) -> bool:
        """Mark one security alert resolved (True when it was open)."""
        with self._writing() as conn:
            done = conn.execute(
                "UPDATE security_alerts SET resolved_ns = ?, resolution = ?, resolved_by = ? "
                "WHERE id = ? AND resolved_ns IS NULL",
                (at_ns, resolution, by, alert_id),
            ).rowcount
        return bool(done)

    # ------------------------------------------------------------------ what the metrics read

    def relay_latencies_since(self, after_ns: int, limit: int = 10_000) -> list[tuple[int, float]]:
        """``(submitted_ns, seconds from the relay taking the event to its submission)`` of
        registrations submitted after ``after_ns``, oldest first (through their index)."""
        with self.reading() as conn:
            return [
                (int(s), (s - c) / 1e9)
                for s, c in conn.execute(
                    "SELECT submitted_ns, created_ns FROM registrations WHERE submitted_ns > ? "
                    "ORDER BY submitted_ns LIMIT ?",
                    (after_ns, limit),
                )
            ]

    def terminal_audit_rows(self, terminal: str, limit: int = 100) -> list[Row]:
        """The terminal's audit trail (``at_ns, action, detail``), newest first."""
        return self._rows(
            "SELECT at_ns, action, detail FROM terminal_audit WHERE terminal = ? "
            "ORDER BY at_ns DESC LIMIT ?",
            (terminal, limit),
        )
