"""The gateway's inbox: every verified event, exactly once, unique on (terminal, seq).

This is the gateway's end of the effectively-once chain (reference/reliability.md section 3):
an event is acknowledged to the terminal only after the transaction that holds it has committed
(WAL, ``synchronous=FULL``). The same event arriving again (same digest) is reported as a
duplicate so the caller re-acknowledges it; the same sequence number with a *different* digest
is a security alert, recorded, and never stored over the first.

The hash chain is checked here, per terminal, as events are stored: an event whose ``prev`` does
not match the digest of the stored event before it (or whose digest is not the ``prev`` of the
stored event after it) is a ``chain_break`` security alert. The event is stored all the same:
it is evidence, and dropping it would hide what happened. Gaps (seqs never received) become
``seq_gap`` alerts through :meth:`Inbox.record_alert` once they have lasted (see the intake).

The ``inbox`` table's columns are a contract: the CIaO relay reads them by SQL from the same
file. Add tables and indexes freely; never change these columns.

Example::

    inbox = Inbox(tmp / "gateway.db")
    [result] = inbox.put("t-hall-01", [signed], received_ns=time.time_ns())
    result.status            # PutStatus.STORED, then DUPLICATE on a resend
    inbox.gaps()             # [Gap("t-hall-01", 2, 4)] when seqs 2..4 never arrived
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from siteclock import sqlite
from siteclock.protocol import GENESIS_HASH, Event, ProtocolError, SignedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox(
  terminal TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL, digest BLOB NOT NULL,
  body BLOB NOT NULL, alg TEXT NOT NULL, kid TEXT NOT NULL, sig BLOB NOT NULL,
  workplace TEXT NOT NULL, kind TEXT NOT NULL, badge TEXT NOT NULL, wall_ns INTEGER NOT NULL,
  flags TEXT NOT NULL,
  received_ns INTEGER NOT NULL,
  PRIMARY KEY (terminal, seq));
CREATE INDEX IF NOT EXISTS inbox_received ON inbox(received_ns);
CREATE TABLE IF NOT EXISTS security_alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, terminal TEXT NOT NULL,
  seq INTEGER NOT NULL, kind TEXT NOT NULL, stored_digest BLOB, offered_digest BLOB,
  offered_body BLOB);
"""
_ALERT_DETAIL = "ALTER TABLE security_alerts ADD COLUMN detail TEXT"
"""Added after the first release: why the alert was raised, in words (a gap's range...)."""
CHAIN_BREAK = "chain_break"
SEQ_CONFLICT = "seq_conflict"
SEQ_GAP = "seq_gap"


class PutStatus(StrEnum):
    STORED = "stored"  # new, committed
    DUPLICATE = "duplicate"  # already held with the same digest: acknowledge again
    CONFLICT = "conflict"  # same (terminal, seq), different digest: security alert


@dataclass(frozen=True, slots=True)
class PutResult:
    seq: int
    status: PutStatus
    terminal: str = ""
    chain_break: bool = False
    """Stored, but it does not link to a stored neighbour: a security alert was recorded."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers ``first..last`` of ``terminal`` missing below its highest stored seq."""

    terminal: str
    first: int
    last: int


class Inbox:
    """The SQLite inbox. One connection behind a lock; every ``put`` is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite.connect(self.path, schema=_SCHEMA)
        with self._lock, sqlite.immediate(self._conn) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(security_alerts)")}
            if "detail" not in columns:
                db.execute(_ALERT_DETAIL)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def put(
        self,
        terminal: str,
        events: Sequence[tuple[SignedEvent, Event]],
        *,
        received_ns: int,
    ) -> list[PutResult]:
        """Store verified events of one terminal in one transaction (committed on return).

        ``events`` pairs each signed envelope with its decoded, already verified event.
        """
        return self.put_many([(terminal, s, e) for s, e in events], received_ns=received_ns)

    def put_many(
        self,
        items: Sequence[tuple[str, SignedEvent, Event]],
        *,
        received_ns: int,
    ) -> list[PutResult]:
        """Store verified events of any terminals in ONE transaction: a group commit, so one
        fsync covers many MQTT messages when a hundred terminals send single events.
        Results are in the order of ``items``."""
        results: list[PutResult] = []
        # BEGIN IMMEDIATE takes the write lock: nobody inserts between look and write
        with self._lock, sqlite.immediate(self._conn) as db:
            held, bodies = self._held(db, items)
            prevs: dict[tuple[str, int], bytes] = {}  # prev hash of rows new in this call
            new_rows, alerts = [], []
            for terminal, signed, ev in items:
                key, digest = (terminal, ev.seq), signed.digest
                if key not in held:
                    held[key] = digest
                    prevs[key] = ev.prev_hash
                    env = signed.envelope
                    new_rows.append((
                        terminal, ev.seq, ev.event_id, digest, env.body, env.alg, env.kid,
                        env.sig, ev.workplace, str(ev.kind), ev.badge, ev.wall_ns,
                        json.dumps(sorted(ev.flags)), received_ns,
                    ))  # fmt: skip
                    broken = _broken_link(terminal, ev, digest, held, prevs, bodies)
                    if broken is not None:
                        neighbour, detail = broken
                        alerts.append((received_ns, terminal, ev.seq, CHAIN_BREAK, neighbour,
                                       digest, env.body, detail))  # fmt: skip
                    results.append(
                        PutResult(ev.seq, PutStatus.STORED, terminal, broken is not None)
                    )
                elif held[key] == digest:
                    results.append(PutResult(ev.seq, PutStatus.DUPLICATE, terminal))
                else:
                    why = "same seq, different event"
                    alerts.append((received_ns, terminal, ev.seq, SEQ_CONFLICT, held[key],
                                   digest, signed.envelope.body, why))  # fmt: skip
                    results.append(PutResult(ev.seq, PutStatus.CONFLICT, terminal))
            db.executemany("INSERT INTO inbox VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", new_rows)
            db.executemany(
                "INSERT INTO security_alerts(at_ns, terminal, seq, kind, stored_digest, "
                "offered_digest, offered_body, detail) VALUES (?,?,?,?,?,?,?,?)",
                alerts,
            )
        return results

    @staticmethod
    def _held(
        db: sqlite3.Connection, items: Sequence[tuple[str, SignedEvent, Event]]
    ) -> tuple[dict[tuple[str, int], bytes], dict[tuple[str, int], bytes]]:
        """Digests and bodies already stored for the (terminal, seq) pairs of ``items`` and
        their neighbours (seq - 1 and seq + 1, for the chain check): one query per terminal
        and 500 seqs instead of one per event."""
        wanted: dict[str, set[int]] = {}
        for terminal, _, ev in items:
            wanted.setdefault(terminal, set()).update((ev.seq - 1, ev.seq, ev.seq + 1))
        held: dict[tuple[str, int], bytes] = {}
        bodies: dict[tuple[str, int], bytes] = {}
        for terminal, seqs in wanted.items():
            ordered = sorted(seqs)
            for i in range(0, len(ordered), 500):
                chunk = ordered[i : i + 500]
                rows = db.execute(
                    f"SELECT seq, digest, body FROM inbox WHERE terminal = ? "
                    f"AND seq IN ({','.join('?' * len(chunk))})",
                    (terminal, *chunk),
                )
                for seq, digest, body in rows:
                    held[(terminal, seq)] = bytes(digest)
                    bodies[(terminal, seq)] = bytes(body)
        return held, bodies

    def record_alert(self, terminal: str, seq: int, kind: str, detail: str, *, at_ns: int) -> None:
        """A security alert that is not about one offered event (a gap, a rate limit)."""
        with self._lock, sqlite.immediate(self._conn) as db:
            db.execute(
                "INSERT INTO security_alerts(at_ns, terminal, seq, kind, detail) "
                "VALUES (?,?,?,?,?)",
                (at_ns, terminal, seq, kind, detail),
            )

    def missing(self, terminal: str, first: int, last: int) -> list[Gap]:
        """The runs of ``first..last`` of ``terminal`` not stored (now)."""
        with self._lock:
            held = [
                s
                for (s,) in self._conn.execute(
                    "SELECT seq FROM inbox WHERE terminal = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                    (terminal, first, last),
                )
            ]
        gaps, expected = [], first
        for seq in [*held, last + 1]:
            if seq > expected:
                gaps.append(Gap(terminal, expected, seq - 1))
            expected = seq + 1
        return gaps

    def alerted_gaps(self) -> set[tuple[str, int]]:
        """``(terminal, first missing seq)`` of every gap already alerted."""
        with self._lock:
            return set(
                self._conn.execute(
                    "SELECT terminal, seq FROM security_alerts WHERE kind = ?", (SEQ_GAP,)
                )
            )

    def max_seq(self, terminal: str) -> int:
        with self._lock:
            (value,) = self._conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE terminal = ?", (terminal,)
            ).fetchone()
        return int(value)

    def gaps(self, terminal: str | None = None) -> list[Gap]:
        """Every run of missing seqs below each terminal's highest stored seq (from seq 1)."""
        where, args = ("WHERE terminal = ?", (terminal,)) if terminal else ("", ())
        with self._lock:
            rows = self._conn.execute(
                "SELECT terminal, prev + 1, seq - 1 FROM ("
                "  SELECT terminal, seq, LAG(seq, 1, 0) OVER (PARTITION BY terminal ORDER BY seq)"
                f"  AS prev FROM inbox {where}) WHERE seq > prev + 1 ORDER BY terminal, seq",
                args,
            ).fetchall()
        return [Gap(t, lo, hi) for t, lo, hi in rows]

    def count(self, terminal: str | None = None) -> int:
        with self._lock:
            if terminal is None:
                (n,) = self._conn.execute("SELECT COUNT(*) FROM inbox").fetchone()
            else:
                (n,) = self._conn.execute(
                    "SELECT COUNT(*) FROM inbox WHERE terminal = ?", (terminal,)
                ).fetchone()
        return int(n)

    def rows(self, terminal: str) -> list[tuple[int, str, bytes]]:
        """``(seq, event_id, digest)`` of a terminal's stored events, in seq order."""
        with self._lock:
            return [
                (s, e, bytes(d))
                for s, e, d in self._conn.execute(
                    "SELECT seq, event_id, digest FROM inbox WHERE terminal = ? ORDER BY seq",
                    (terminal,),
                )
            ]

    def alerts(self, kind: str | None = None) -> list[tuple[str, int, str]]:
        """``(terminal, seq, kind)`` of every security alert (of ``kind``), oldest first."""
        where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        with self._lock:
            return list(
                self._conn.execute(
                    f"SELECT terminal, seq, kind FROM security_alerts {where} ORDER BY id", args
                )
            )


def _broken_link(
    terminal: str,
    ev: Event,
    digest: bytes,
    held: dict[tuple[str, int], bytes],
    prevs: dict[tuple[str, int], bytes],
    bodies: dict[tuple[str, int], bytes],
) -> tuple[bytes | None, str] | None:
    """(the neighbour's digest, why) when ``ev`` does not link to a stored neighbour, else None.

    Only neighbours that are held are checked: a missing one is a gap, reported separately."""
    if ev.seq == 1 and ev.prev_hash != GENESIS_HASH:
        return None, "seq 1 does not start from the genesis hash"
    before = held.get((terminal, ev.seq - 1))
    if before is not None and before != ev.prev_hash:
        return before, f"seq {ev.seq} does not link to the stored seq {ev.seq - 1}"
    after = (terminal, ev.seq + 1)
    if after in held:
        next_prev = prevs.get(after)
        if next_prev is None:
            try:
                next_prev = Event.from_bytes(bodies[after]).prev_hash
            except (KeyError, ProtocolError):
                return held[after], f"the stored seq {ev.seq + 1} cannot be read to check its link"
        if next_prev != digest:
            return held[after], f"the stored seq {ev.seq + 1} does not link to seq {ev.seq}"
    return None
