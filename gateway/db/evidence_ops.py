"""Reads for the evidence export: one worker's stored events on one workplace in a period, with
their relay rows, and the public keys of the terminals that signed them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from siteclock.gateway.db.core import SQLiteCore

_EVENT_COLUMNS = (
    "i.terminal, i.seq, i.event_id, i.digest, i.body, i.alg, i.kid, i.sig, i.envelope, "
    "i.workplace, i.kind, i.badge, i.wall_ns, i.flags, i.received_ns, r.state, r.ciao_id, "
    "r.validity, r.remarks, r.reg_date, r.ciao_type, r.problem, r.corrected_wall_ns, "
    "r.clock_note, r.worker_ref"
)


class EvidenceOps(SQLiteCore):
    def badges_of_worker(self, worker_ref: str) -> list[str]:
        """Every badge linked to the worker now (active or blocked) or whose taps the relay
        resolved to them before (a badge since re-linked to someone else keeps its past)."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT badge FROM reg_badges WHERE worker_ref = ? UNION "
                "SELECT DISTINCT i.badge FROM registrations r JOIN inbox i USING (terminal, seq) "
                "WHERE r.worker_ref = ?",
                (worker_ref, worker_ref),
            ).fetchall()
        return sorted(b for (b,) in rows)

    def evidence_events(
        self, worker_ref: str, badges: Collection[str], workplace: str, from_ns: int, to_ns: int
    ) -> list[Any]:
        """Stored events of ``badges`` on ``workplace`` with ``from_ns <= wall_ns < to_ns``
        (the terminal's time) joined to their relay row, oldest first; a tap the relay gave to
        another worker (the badge was re-linked since) is left out. Rows by column name."""
        if not badges:
            return []
        marks = ",".join("?" * len(badges))
        return self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM inbox i LEFT JOIN registrations r "
            f"USING (terminal, seq) WHERE i.badge IN ({marks}) AND i.wall_ns >= ? "
            "AND i.wall_ns < ? AND i.workplace = ? "
            "AND (r.worker_ref IS NULL OR r.worker_ref = ?) ORDER BY i.wall_ns, i.terminal, i.seq",
            (*sorted(badges), from_ns, to_ns, workplace, worker_ref),
        )

    def terminal_key_rows(self, terminals: Sequence[str]) -> list[Any]:
        """``terminal, kid, alg, public_key, valid_from_ns, revoked_at_ns`` of every key the
        given terminals ever had (a rotated key still checks the events it signed)."""
        if not terminals:
            return []
        marks = ",".join("?" * len(terminals))
        return self._rows(
            "SELECT terminal, kid, alg, public_key, valid_from_ns, revoked_at_ns "
            f"FROM terminal_keys WHERE terminal IN ({marks}) ORDER BY terminal, valid_from_ns",
            tuple(terminals),
        )
