"""Operations of the sequence check (``worker_sequence``: the relay's in/out decisions) and of
the site view the roster carries (each worker's newest decided or stored tap)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from siteclock.gateway.db.core import Core
from siteclock.gateway.db.schema import INBOX_BADGE_INDEX
from siteclock.protocol import NON_ATTENDANCE_FLAGS

_ATTENDANCE_ONLY = "".join(
    f"AND i.flags NOT LIKE '%\"{flag}\"%' " for flag in sorted(NON_ATTENDANCE_FLAGS)
)
"""Leaves out a stored tap flagged as not attendance (the flags column is a JSON list of
strings, so each flag appears quoted)."""
_NOT_CLAIMED = "AND coalesce(r.state, 'queued') NOT IN ('selftest', 'enrolment')"
"""Leaves out a tap the relay (``r``: its registrations row) holds as a self-test or that a
badge enrolment claimed: evidence, never attendance."""

Decision = tuple[Any, ...]
"""(terminal, seq, workplace, worker_ref, wall_ns, kind, ciao_type, issues, decided_ns)."""


class SequenceOps(Core):
    _badge_index = False
    _NEWEST_PER_WORKER = (
        # SQLite takes the bare columns from the row holding max() (PostgreSQL overrides it)
        "SELECT worker_ref, kind, ciao_type, max(wall_ns) FROM worker_sequence "
        "WHERE workplace=? AND wall_ns>=? GROUP BY worker_ref"
    )

    def index_inbox_by_badge(self) -> None:
        """A worker's taps are found in the inbox by badge and time (the sequence check's
        replay, the site view's newest stored tap): the index is made when those first run,
        so a gateway that only takes in events does not maintain it."""
        if not self._badge_index:
            with self._writing() as conn:
                conn.execute(INBOX_BADGE_INDEX)
            self._badge_index = True

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Keep the sequence decisions of rows marked submitted (first decision wins)."""
        with self._writing() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO worker_sequence(terminal, seq, workplace, worker_ref, "
                "wall_ns, kind, ciao_type, issues, decided_ns) VALUES (?,?,?,?,?,?,?,?,?)",
                decisions,
            )

    def inbox_flags(
        self, keys: Sequence[tuple[str, int]]
    ) -> list[tuple[tuple[str, int], tuple[frozenset[str], int]]]:
        """``(key, (flags, received_ns))`` of the stored events among ``keys``."""
        flags = []
        with self.reading() as conn:
            for start in range(0, len(keys), 400):
                chunk = keys[start : start + 400]
                wanted = ",".join("(?,?)" for _ in chunk)
                found = conn.execute(
                    "SELECT terminal, seq, flags, received_ns FROM inbox "
                    f"WHERE (terminal, seq) IN (VALUES {wanted})",
                    [v for key in chunk for v in key],
                ).fetchall()
                for terminal, seq, text, received_ns in found:
                    flags.append(((terminal, seq), (frozenset(json.loads(text)), received_ns)))
        return flags

    def decision(self, key: tuple[str, int]) -> tuple[Any, ...] | None:
        """``(workplace, worker_ref, wall_ns, kind, ciao_type, issues)`` decided for ``key``."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT workplace, worker_ref, wall_ns, kind, ciao_type, issues "
                "FROM worker_sequence WHERE terminal=? AND seq=?",
                key,
            ).fetchone()

    def prior_decision(
        self, workplace: str, worker_ref: str, wall_ns: int, key: tuple[str, int]
    ) -> tuple[str, int] | None:
        """``(ciao_type, wall_ns)`` of the worker's newest decided tap at or before
        ``wall_ns``, other than ``key``."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT ciao_type, wall_ns FROM worker_sequence WHERE workplace=? AND "
                "worker_ref=? AND wall_ns<=? AND NOT (terminal=? AND seq=?) "
                "ORDER BY wall_ns DESC LIMIT 1",
                (workplace, worker_ref, wall_ns, *key),
            ).fetchone()

    def worker_badges(self, worker_ref: str) -> list[str]:
        with self.reading() as conn:
            found = conn.execute("SELECT badge FROM reg_badges WHERE worker_ref=?", (worker_ref,))
            return [b for (b,) in found]

    def undecided_taps(
        self, badges: Sequence[str], since_ns: int, until_ns: int, workplace: str
    ) -> list[tuple[str, int, str, int, str]]:
        """``(terminal, seq, kind, wall_ns, flags JSON)`` of the stored taps of ``badges`` in
        ``(since_ns, until_ns]`` on ``workplace`` that have no decision and were not claimed,
        oldest first."""
        marks = ",".join("?" * len(badges))
        with self.reading() as conn:
            # badge IN (...) first, so the (badge, wall_ns) index answers: no scan of the inbox
            return conn.execute(
                "SELECT i.terminal, i.seq, i.kind, i.wall_ns, i.flags FROM inbox i "
                "LEFT JOIN registrations r ON r.terminal = i.terminal AND r.seq = i.seq "
                "LEFT JOIN worker_sequence s ON s.terminal = i.terminal AND s.seq = i.seq "
                f"WHERE i.badge IN ({marks}) AND i.wall_ns > ? AND i.wall_ns <= ? "
                "AND i.workplace = ? AND s.terminal IS NULL "
                f"{_NOT_CLAIMED} ORDER BY i.wall_ns, i.terminal, i.seq",
                (*badges, since_ns, until_ns, workplace),
            ).fetchall()

    def decided_later(
        self, workplace: str, worker_ref: str, wall_ns: int, decided_before_ns: int
    ) -> bool:
        """Whether a tap of the worker later than ``wall_ns`` was decided before the given
        instant."""
        with self.reading() as conn:
            found = conn.execute(
                "SELECT 1 FROM worker_sequence WHERE workplace=? AND worker_ref=? AND wall_ns>? "
                "AND decided_ns<? LIMIT 1",
                (workplace, worker_ref, wall_ns, decided_before_ns),
            ).fetchone()
        return found is not None

    def sequence_version(self) -> tuple[int, int]:
        """``(newest decision, newest stored event)`` row ids: two index look-ups that change
        whenever a tap is decided or stored."""
        with self.reading() as conn:
            (decided,) = conn.execute(
                "SELECT coalesce(max(rowid), 0) FROM worker_sequence"
            ).fetchone()
            (stored,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM inbox").fetchone()
        return decided, stored

    def newest_decision(self, workplace: str, worker_ref: str) -> tuple[str, str, int] | None:
        """``(kind, ciao_type, wall_ns)`` of the worker's newest decided tap on a workplace."""
        with self.reading() as conn:
            return conn.execute(
                "SELECT kind, ciao_type, wall_ns FROM worker_sequence WHERE workplace=? "
                "AND worker_ref=? ORDER BY wall_ns DESC LIMIT 1",
                (workplace, worker_ref),
            ).fetchone()

    def newest_decisions(self, workplace: str, window_ns: int) -> list[tuple[str, str, str, int]]:
        """``(worker_ref, kind, ciao_type, wall_ns)``: each worker's newest decided tap within
        ``window_ns`` of the workplace's newest one."""
        with self.reading() as conn:
            (last,) = conn.execute(
                "SELECT max(wall_ns) FROM worker_sequence WHERE workplace=?", (workplace,)
            ).fetchone()
            if last is None:
                return []
            return conn.execute(self._NEWEST_PER_WORKER, (workplace, last - window_ns)).fetchall()

    @staticmethod
    def _newest_stored_tap_sql(future_slack_ns: int) -> str:
        return (
            "SELECT i.kind, i.wall_ns FROM inbox i "
            "LEFT JOIN worker_sequence s ON s.terminal = i.terminal AND s.seq = i.seq "
            "LEFT JOIN registrations r ON r.terminal = i.terminal AND r.seq = i.seq "
            "WHERE i.badge = ? AND i.wall_ns > ? AND i.workplace = ? "
            f"AND s.terminal IS NULL AND i.wall_ns <= i.received_ns + {int(future_slack_ns)} "
            f"{_ATTENDANCE_ONLY}{_NOT_CLAIMED} "
            "ORDER BY i.wall_ns DESC LIMIT 1"
        )

    def newest_stored_tap(
        self, badge: str, since_ns: int, workplace: str, future_slack_ns: int
    ) -> tuple[str, int] | None:
        """``(kind, wall_ns)`` of a badge's newest stored attendance tap on a workplace, newer
        than ``since_ns``, not decided and not claimed as evidence, and dated at most
        ``future_slack_ns`` after it reached the gateway. Found through the badge index."""
        with self.reading() as conn:
            return conn.execute(
                self._newest_stored_tap_sql(future_slack_ns), (badge, since_ns, workplace)
            ).fetchone()

    def explain_newest_stored_tap(self, future_slack_ns: int) -> str:
        """SQLite's query plan of :meth:`newest_stored_tap` (the proof it uses the index)."""
        with self.reading() as conn:
            rows = conn.execute(
                "EXPLAIN QUERY PLAN " + self._newest_stored_tap_sql(future_slack_ns),
                ("", 0, ""),
            )
            return " ".join(str(row) for row in rows)

    def sequence_issues(self, workplace: str | None = None) -> list[tuple[Any, ...]]:
        """``(terminal, seq, workplace, worker_ref, wall_ns, kind, ciao_type, issues)`` of
        every decision with an issue, oldest tap first."""
        sql = (
            "SELECT terminal, seq, workplace, worker_ref, wall_ns, kind, ciao_type, issues "
            "FROM worker_sequence WHERE issues<>''"
        )
        args: tuple[Any, ...] = ()
        if workplace is not None:
            sql += " AND workplace=?"
            args = (workplace,)
        with self.reading() as conn:
            return conn.execute(sql + " ORDER BY wall_ns, terminal, seq", args).fetchall()
