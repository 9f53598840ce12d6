"""Operations on the inbox (verified events, unique on terminal+seq) and its security alerts.

The chain check and the duplicate/conflict decision are the inbox's (``gateway/store.py``);
here is only how they are read and written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siteclock.gateway.db.core import Core

InboxRow = tuple[Any, ...]
"""(terminal, seq, event_id, digest, body, alg, kid, sig, workplace, kind, badge, wall_ns,
flags JSON, received_ns, envelope version): the ``inbox`` columns in order."""
INBOX_COLUMNS = (
    "terminal", "seq", "event_id", "digest", "body", "alg", "kid", "sig", "workplace", "kind",
    "badge", "wall_ns", "flags", "received_ns", "envelope",
)  # fmt: skip
"""The order of an :data:`InboxRow`."""
AlertRow = tuple[Any, ...]
"""(at_ns, terminal, seq, kind, stored_digest, offered_digest, offered_body, detail)."""


class InboxOps(Core):
    def held_events(
        self, wanted: Mapping[str, Iterable[int]]
    ) -> dict[tuple[str, int], tuple[bytes, bytes]]:
        """``(terminal, seq) -> (digest, body)`` of the stored events among ``wanted`` (seqs
        per terminal): one query per terminal and 500 seqs instead of one per event."""
        found: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        with self.reading() as conn:
            for terminal, seqs in wanted.items():
                ordered = sorted(seqs)
                for i in range(0, len(ordered), 500):
                    chunk = ordered[i : i + 500]
                    rows = conn.execute(
                        f"SELECT seq, digest, body FROM inbox WHERE terminal = ? "
                        f"AND seq IN ({','.join('?' * len(chunk))})",
                        (terminal, *chunk),
                    )
                    for seq, digest, body in rows:
                        found[(terminal, seq)] = (bytes(digest), bytes(body))
        return found

    def store_events(self, events: Sequence[InboxRow], alerts: Sequence[AlertRow] = ()) -> None:
        """Store new inbox rows and the security alerts raised while judging them."""
        with self._writing() as conn:
            # Columns named: a column added by a migration (envelope) comes after PostgreSQL's
            # rowid column, so a positional insert would put it in the wrong place.
            conn.executemany(
                f"INSERT INTO inbox({', '.join(INBOX_COLUMNS)}) "
                f"VALUES ({','.join('?' * len(INBOX_COLUMNS))})",
                events,
            )
            conn.executemany(
                "INSERT INTO security_alerts(at_ns, terminal, seq, kind, stored_digest, "
                "offered_digest, offered_body, detail) VALUES (?,?,?,?,?,?,?,?)",
                alerts,
            )

    def record_security_alert(
        self, terminal: str, seq: int, kind: str, detail: str, *, at_ns: int
    ) -> None:
        """A security alert that is not about one offered event (a gap, a rate limit)."""
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO security_alerts(at_ns, terminal, seq, kind, detail) "
                "VALUES (?,?,?,?,?)",
                (at_ns, terminal, seq, kind, detail),
            )

    def stored_seqs(self, terminal: str, first: int, last: int) -> list[int]:
        """The stored seqs of ``terminal`` in ``first..last``, ascending."""
        with self.reading() as conn:
            return [
                s
                for (s,) in conn.execute(
                    "SELECT seq FROM inbox WHERE terminal = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                    (terminal, first, last),
                )
            ]

    def alert_keys(self, kind: str) -> set[tuple[str, int]]:
        """``(terminal, seq)`` of every security alert of ``kind``."""
        with self.reading() as conn:
            return set(
                conn.execute("SELECT terminal, seq FROM security_alerts WHERE kind = ?", (kind,))
            )

    def max_seq(self, terminal: str) -> int:
        with self.reading() as conn:
            (value,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE terminal = ?", (terminal,)
            ).fetchone()
        return int(value)

    def seq_gaps(self, terminal: str | None = None) -> list[tuple[str, int, int]]:
        """``(terminal, first, last)`` of every run of seqs missing below each terminal's
        highest stored seq (from seq 1)."""
        where, args = ("WHERE terminal = ?", (terminal,)) if terminal else ("", ())
        with self.reading() as conn:
            return conn.execute(
                "SELECT terminal, prev + 1, seq - 1 FROM ("
                "  SELECT terminal, seq, LAG(seq, 1, 0) OVER (PARTITION BY terminal ORDER BY seq)"
                f"  AS prev FROM inbox {where}) AS runs WHERE seq > prev + 1 "
                "ORDER BY terminal, seq",
                args,
            ).fetchall()

    def count_events(self, terminal: str | None = None) -> int:
        with self.reading() as conn:
            if terminal is None:
                (n,) = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()
            else:
                (n,) = conn.execute(
                    "SELECT COUNT(*) FROM inbox WHERE terminal = ?", (terminal,)
                ).fetchone()
        return int(n)

    def event_keys(self, terminal: str) -> list[tuple[int, str, bytes]]:
        """``(seq, event_id, digest)`` of a terminal's stored events, in seq order."""
        with self.reading() as conn:
            return [
                (s, e, bytes(d))
                for s, e, d in conn.execute(
                    "SELECT seq, event_id, digest FROM inbox WHERE terminal = ? ORDER BY seq",
                    (terminal,),
                )
            ]

    def security_alerts(self, kind: str | None = None) -> list[tuple[str, int, str]]:
        """``(terminal, seq, kind)`` of every security alert (of ``kind``), oldest first."""
        where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        with self.reading() as conn:
            return list(
                conn.execute(
                    f"SELECT terminal, seq, kind FROM security_alerts {where} ORDER BY id", args
                )
            )
