"""The terminal's outbox: the system of record for every tap (DESIGN decision 1).

A tap exists once :meth:`Outbox.append` has returned, not before: the event is numbered, linked
to the previous event's hash, signed and inserted in one ``BEGIN IMMEDIATE`` transaction that
commits with ``synchronous=FULL`` in WAL mode (one fsync of the WAL per tap). Only then may the
worker be told "saved". Nothing is ever deleted because the broker took a message: an event
leaves the ``pending`` state only on the gateway's end-to-end ack (:meth:`mark_delivered`), and
delivered events stay for the evidence window before :meth:`prune_delivered` removes them, oldest
first, so what is held is always one unbroken tail of the hash chain.

Why each setting:

* ``AUTOINCREMENT``: without it SQLite reuses a rowid once the newest rows are deleted, and a
  reused sequence number looks like a replay to the gateway.
* ``auto_vacuum=INCREMENTAL`` before the first table: pruning gives pages back in small steps
  (``incremental_vacuum``) instead of a ``VACUUM`` that rewrites the file and needs twice the space.
* ``quick_check`` at open: a damaged file is reported (``OutboxCorrupt``) and left exactly as it
  is, for a human to rescue; the terminal never deletes or rewrites its evidence.
* A one-row ``head`` keeps the last sequence number and digest (the chain continues after the
  newest rows are pruned), the counters that make :meth:`stats` cheap at a million rows (kept by
  triggers, so no code path can forget them), and the checkpoint where pruning stopped.

A full disk raises :class:`OutboxFull` and changes nothing already stored; the next append works
as soon as space is back. One connection serves the capture and uplink threads behind a lock.

Example::

    box = Outbox(path, signer=signer, terminal_id="t-0001", workplace="ABCDEFGH12345")
    signed = box.append(kind=Kind.IN, badge="nfc-a:04A1B2C3", clock=read_clock())
    box.unsent()                       # [signed]
    box.mark_delivered([signed.event.seq])
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from siteclock.files import fsync_directory
from siteclock.protocol import (
    GENESIS_HASH,
    ClockState,
    Event,
    Kind,
    Outcome,
    SignedEvent,
    Signer,
    Verdict,
    check_badge,
    check_terminal_id,
    check_workplace,
    sign_event,
    verify_chain,
)
from siteclock.terminal import clock as clock_mod
from siteclock.terminal.outbox_file import (
    COLUMNS,
    SCHEMA,
    OutboxCorrupt,
    OutboxError,
    OutboxFull,
    OutboxReadOnly,
    OutboxStats,
    check_integrity,
    is_full,
    is_read_only,
    read_only_message,
    signed_from_row,
)
from siteclock.terminal.outbox_verify import verify_cli

# The file's schema and errors (outbox_file) and the offline verifier (outbox_verify) live in
# their own modules; these names stay importable from here.
__all__ = [
    "Outbox",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxFull",
    "OutboxReadOnly",
    "OutboxStats",
    "verify_cli",
]

T = TypeVar("T")
PENDING = "pending"
DELIVERED = "delivered"
_CHUNK = 500  # bound on "IN (...)" lists: SQLite's default host-parameter limit is far above


# --------------------------------------------------------------------------- outbox


class Outbox:
    """The durable, signed, hash-chained queue of this terminal's events.

    :param path: the SQLite file (created on first use; its directory must exist).
    :param signer: signs each event's canonical bytes (Ed25519 key file, or a secure element).
    :param terminal_id: this terminal's id, written into every event.
    :param workplace: the Declaration of Works reference this terminal is bound to.
    """

    def __init__(self, path: Path, *, signer: Signer, terminal_id: str, workplace: str) -> None:
        self.path = Path(path)
        check_terminal_id(terminal_id)
        check_workplace(workplace)
        self._signer = signer
        self._terminal_id = terminal_id
        self._workplace = workplace
        self._lock = threading.RLock()
        self._acked = threading.Condition()  # notified once acks are committed
        self._conn: sqlite3.Connection | None = None
        new_file = not self.path.exists()
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            check_integrity(conn, self.path)  # before anything that could write to the file
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only effective on a new file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # One script, one transaction: a crash here leaves no half-made schema.
            conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
            if new_file:
                # SQLite syncs the directory for its WAL, not for a new database file: without
                # this a power cut soon after first start could take the file's very name.
                fsync_directory(self.path.parent)
        except sqlite3.Error as exc:
            conn.close()
            if is_full(exc):
                raise OutboxFull(f"{self.path}: no space to open the outbox ({exc})") from exc
            raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def signer(self) -> Signer:
        """The key this outbox signs with (the uplink also signs its clock proofs with it)."""
        return self._signer

    # ----------------------------------------------------------------- helpers

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"{self.path}: outbox is closed")
        return self._conn

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            # SQLite may already have rolled back (it does on SQLITE_FULL at commit).
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in one IMMEDIATE transaction; map a full disk to OutboxFull."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                result = work(db)
                db.execute("COMMIT")
                return result
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                if is_full(exc):
                    raise OutboxFull(
                        28, f"{self.path}: disk full, nothing was written ({exc})"
                    ) from exc
                if is_read_only(self.path.parent):
                    raise OutboxReadOnly(
                        30, f"nothing was written ({exc}): {read_only_message(self.path.parent)}"
                    ) from exc
                raise
            except BaseException:
                self._rollback()
                raise

    # ----------------------------------------------------------------- writing

    def append(
        self,
        *,
        kind: Kind,
        badge: str,
        clock: ClockState,
        flags: Iterable[str] = (),
        wall_ns: int | None = None,
        boot_id: str | None = None,
        boot_ns: int | None = None,
        state_key: str | None = None,
    ) -> SignedEvent:
        """Record one tap durably and return it signed. Raises :class:`OutboxFull` when full.

        The stamps default to now; pass them to record the moment of the read rather than of
        the write. When this returns, the event has been committed with a full sync.
        ``state_key`` names the worker whose state this tap moves (see :meth:`worker_states`),
        in the same transaction; None (a self-test, any non-attendance tap) moves nobody's.
        """
        check_badge(badge)  # an event that could not be decoded later must never be stored
        wall = clock_mod.wall_ns() if wall_ns is None else wall_ns
        boot = clock_mod.boot_id() if boot_id is None else boot_id
        bns = clock_mod.boot_ns() if boot_ns is None else boot_ns
        flag_tuple = tuple(sorted(set(map(str, flags))))

        def work(db: sqlite3.Connection) -> SignedEvent:
            last_seq, last_digest = db.execute(
                "SELECT last_seq, last_digest FROM head WHERE id = 1"
            ).fetchone()
            event = Event(
                terminal_id=self._terminal_id,
                workplace=self._workplace,
                seq=last_seq + 1,
                prev_hash=bytes(last_digest),
                event_id=uuid.uuid4().hex,
                kind=Kind(kind),
                badge=badge,
                wall_ns=wall,
                boot_id=boot,
                boot_ns=bns,
                clock=clock,
                flags=flag_tuple,
            )
            signed = sign_event(event, self._signer)
            env = signed.envelope
            digest = signed.digest
            db.execute(
                "INSERT INTO events (seq, event_id, badge, kind, body, alg, kid, sig, digest,"
                " wall_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.seq, event.event_id, badge, str(event.kind), env.body, env.alg,
                 env.kid, env.sig, digest, wall),
            )  # fmt: skip
            db.execute(
                "UPDATE head SET last_seq = ?, last_digest = ? WHERE id = 1", (event.seq, digest)
            )
            if state_key is not None:
                db.execute(
                    "INSERT OR REPLACE INTO worker_state (workplace, worker, kind, wall_ns, seq)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (self._workplace, state_key, str(event.kind), wall, event.seq),
                )
            return signed

        return self._write(work)

    def mark_delivered(self, seqs: Iterable[int]) -> int:
        """Mark events delivered: call only on the gateway's end-to-end ack. Idempotent.

        Returns how many events changed from pending to delivered.
        """
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return 0
        now = clock_mod.wall_ns()

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = db.execute(
                    f"UPDATE events SET state = 'delivered', delivered_at = ? "
                    f"WHERE state = 'pending' AND seq IN ({marks})",
                    (now, *chunk),
                )
                changed += cur.rowcount
            return changed

        changed = self._write(work)
        with self._acked:
            self._acked.notify_all()
        return changed

    def record_verdict(self, seq: int, outcome: Outcome, reason: str) -> None:
        """Keep the NSSO's verdict on an event, to show the worker on their next tap."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE events SET verdict = ?, verdict_reason = ?, verdict_shown = 0 "
                "WHERE seq = ?",
                (str(Outcome(outcome)), reason, int(seq)),
            )

        self._write(work)

    def last_verdict_for(self, badge: str) -> Verdict | None:
        """The newest verdict on this badge's events not shown yet, and mark them all shown.

        Called when the worker taps again: the answer is shown once, then not again.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT seq, verdict, verdict_reason FROM events WHERE badge = ? "
                "AND verdict IS NOT NULL AND verdict_shown = 0 ORDER BY seq DESC LIMIT 1",
                (badge,),
            ).fetchone()
            if row is None:
                return None

            def work(db: sqlite3.Connection) -> None:
                db.execute(
                    "UPDATE events SET verdict_shown = 1 WHERE badge = ? "
                    "AND verdict IS NOT NULL AND verdict_shown = 0",
                    (badge,),
                )

            # Showing it again next time is harmless; the tap matters more than the mark.
            with contextlib.suppress(OutboxFull):
                self._write(work)
            return Verdict(seq=row[0], outcome=Outcome(row[1]), reason=row[2] or "")

    def prune_delivered(self, *, older_than_ns: int, batch: int = 500) -> int:
        """Delete delivered events whose ack is older than ``older_than_ns`` (wall clock).

        Works from the oldest event up and stops at the first one that must stay (unsent, or
        delivered too recently), so the held history stays one unbroken tail of the chain.
        Each batch is its own short transaction followed by an incremental vacuum, so a tap is
        never held up for long. Returns the number of events deleted.
        """
        deleted = 0
        while True:

            def work(db: sqlite3.Connection) -> tuple[int, bool]:
                rows = db.execute(
                    "SELECT seq, state, delivered_at, digest FROM events ORDER BY seq LIMIT ?",
                    (batch,),
                ).fetchall()
                prunable = []
                for seq, state, delivered_at, digest in rows:
                    if state != DELIVERED or delivered_at is None or delivered_at >= older_than_ns:
                        break
                    prunable.append((seq, digest))
                if not prunable:
                    return 0, True
                last_seq, last_digest = prunable[-1]
                db.execute("DELETE FROM events WHERE seq <= ?", (last_seq,))
                db.execute(
                    "UPDATE head SET pruned_seq = ?, pruned_digest = ? WHERE id = 1",
                    (last_seq, last_digest),
                )
                return len(prunable), len(prunable) < len(rows) or len(rows) < batch

            count, done = self._write(work)
            deleted += count
            if count:
                with self._lock:
                    self._db.execute(f"PRAGMA incremental_vacuum({max(batch // 4, 16)})")
            if done:
                return deleted

    def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``done()`` (say, "nothing pending") holds: checked now and again each
        time :meth:`mark_delivered` commits acks on this object (an Uplink delivering in this
        process), so the waiter wakes on the ack itself. False if ``timeout_s`` passed first.
        """
        with self._acked:
            return self._acked.wait_for(done, timeout_s)

    # ----------------------------------------------------------------- reading

    def unsent(self, *, after_seq: int = 0, limit: int = 500) -> list[SignedEvent]:
        """Pending events with ``seq > after_seq``, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM events WHERE state = 'pending' AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            ).fetchall()
        return [signed_from_row(r) for r in rows]

    def stats(self) -> OutboxStats:
        """Queue depth, oldest unsent wall time, last seq, rows held: a few index lookups."""
        with self._lock:
            last_seq, pending, total = self._db.execute(
                "SELECT last_seq, pending, total FROM head WHERE id = 1"
            ).fetchone()
            oldest = self._db.execute(
                "SELECT wall_ns FROM events WHERE state = 'pending' ORDER BY seq LIMIT 1"
            ).fetchone()
        return OutboxStats(
            depth=pending,
            oldest_unsent_wall_ns=oldest[0] if oldest else None,
            last_seq=last_seq,
            total=total,
        )

    def events(self, *, from_seq: int = 1) -> Iterator[SignedEvent]:
        """Every event still held from ``from_seq`` on, in order (read page by page)."""
        after = int(from_seq) - 1
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT 1000",
                    (after,),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield signed_from_row(row)
            after = rows[-1][0]

    def checkpoint(self) -> tuple[int, bytes]:
        """``(first_seq, prev_hash)`` where the held history starts (after any pruning)."""
        with self._lock:
            pruned_seq, pruned_digest = self._db.execute(
                "SELECT pruned_seq, pruned_digest FROM head WHERE id = 1"
            ).fetchone()
        return pruned_seq + 1, bytes(pruned_digest) if pruned_seq else GENESIS_HASH

    def worker_states(self) -> dict[str, tuple[Kind, int]]:
        """Each worker's last attendance tap here, ``{key: (kind, wall_ns)}``, for this
        terminal's *current* workplace only: after a rebind the old site's states are not
        read, so every worker starts the new site clean."""
        with self._lock:
            rows = self._db.execute(
                "SELECT worker, kind, wall_ns FROM worker_state WHERE workplace = ?",
                (self._workplace,),
            ).fetchall()
        return {worker: (Kind(kind), wall_ns) for worker, kind, wall_ns in rows}

    def verify(self, keys: dict[str, bytes]) -> int:
        """Verify the held history's signatures and hash chain; returns the events checked."""
        first_seq, prev = self.checkpoint()
        return verify_chain(self.events(from_seq=first_seq), keys, prev_hash=prev,
                            first_seq=first_seq)  # fmt: skip

    def close(self) -> None:
        """Close the database. Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verdicts_held(path: Path | str) -> int:
    """How many events of the outbox at ``path`` carry the NSSO's verdict, read without taking
    the file from its terminal (read-only; 0 while the terminal is still creating it)."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM events WHERE verdict IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()
