"""Read-only views across the gateway's tables, for the demo and the tests' observers."""

from __future__ import annotations

from typing import Any

from siteclock.gateway.db.core import Core


class ReadOps(Core):
    def event_journeys(self) -> list[Any]:
        """Every stored event with its relay row (if any), in arrival order: ``terminal,
        seq, kind, badge, flags, state, ciao_id, validity, remarks, last_error, notified,
        clock_note`` by name."""
        return self._rows(
            "SELECT i.terminal, i.seq, i.kind, i.badge, i.flags, r.state, r.ciao_id, "
            "r.validity, r.remarks, r.last_error, r.notified, r.clock_note FROM inbox i "
            "LEFT JOIN registrations r USING (terminal, seq) ORDER BY i.received_ns"
        )

    def count_notified(self) -> int:
        """Registrations whose verdict the terminal was sent."""
        with self.reading() as conn:
            (n,) = conn.execute("SELECT count(*) FROM registrations WHERE notified=1").fetchone()
        return int(n)
