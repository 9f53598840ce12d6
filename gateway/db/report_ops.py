"""Reads for the presence reports: the gateway's decided taps (``worker_sequence``) per worker
and workplace in a period, with the worker's name."""

from __future__ import annotations

from typing import Any

from siteclock.gateway.db.core import SQLiteCore


class ReportOps(SQLiteCore):
    def presence_taps(
        self, from_ns: int, to_ns: int, *, workplace: str | None = None,
        worker_ref: str | None = None,
    ) -> list[Any]:  # fmt: skip
        """``workplace, worker_ref, name, wall_ns, kind, ciao_type, issues`` of every tap the
        relay decided with ``from_ns <= wall_ns < to_ns`` (the time as relayed: corrected when
        the terminal's clock was not synced), by workplace, worker and time."""
        where, args = ["s.wall_ns >= ?", "s.wall_ns < ?"], [from_ns, to_ns]
        if workplace is not None:
            where.append("s.workplace = ?")
            args.append(workplace)
        if worker_ref is not None:
            where.append("s.worker_ref = ?")
            args.append(worker_ref)
        return self._rows(
            "SELECT s.workplace, s.worker_ref, coalesce(w.name, '') AS name, s.wall_ns, s.kind, "
            "s.ciao_type, s.issues FROM worker_sequence s "
            "LEFT JOIN reg_workers w ON w.ref = s.worker_ref "
            f"WHERE {' AND '.join(where)} ORDER BY s.workplace, s.worker_ref, s.wall_ns, s.seq",
            args,
        )
