"""The terminal outbox's SQLite file: its schema, the errors it raises, and the checks on it.

Why each setting is what it is: see :mod:`siteclock.terminal.outbox`, which owns the file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from siteclock.protocol import Envelope, SignedEvent

SQLITE_FULL = 13


class OutboxError(Exception):
    """Base of the outbox's errors."""


class OutboxFull(OutboxError, OSError):
    """The disk (or the database's page limit) is full: the tap was NOT recorded."""


class OutboxReadOnly(OutboxError, OSError):
    """The disk holding the outbox turned read-only: the tap was NOT recorded."""


def read_only_message(data_dir: Path) -> str:
    return (
        f"{data_dir} is on a read-only file system (the kernel remounts a failing SD card "
        "read-only): no tap can be recorded; everything recorded before is kept. Check the "
        "card (dmesg), then reboot or replace it and copy the data directory over"
    )


def is_read_only(directory: Path) -> bool:
    """Whether ``directory`` refuses a new file with EROFS (asked after a failed write: SQLite
    reports a read-only disk as a plain ``disk I/O error``)."""
    probe = directory / f".rw-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as exc:
        return exc.errno == errno.EROFS
    os.close(fd)
    probe.unlink(missing_ok=True)
    return False


class OutboxCorrupt(OutboxError, OSError):
    """The outbox file fails SQLite's integrity check or is not a database. It is left untouched."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What the heartbeat reports. ``depth`` counts events not yet acked by the gateway."""

    depth: int
    oldest_unsent_wall_ns: int | None
    last_seq: int
    total: int


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    badge TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    alg TEXT NOT NULL,
    kid TEXT NOT NULL,
    sig BLOB NOT NULL,
    digest BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered')),
    wall_ns INTEGER NOT NULL,
    delivered_at INTEGER,
    verdict TEXT,
    verdict_reason TEXT,
    verdict_shown INTEGER NOT NULL DEFAULT 0
);
-- Partial indexes stay small: only what is unsent, only verdicts a worker has not seen yet.
CREATE INDEX IF NOT EXISTS events_pending ON events(seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_unshown ON events(badge, seq)
    WHERE verdict IS NOT NULL AND verdict_shown = 0;
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL,
    last_digest BLOB NOT NULL,
    pruned_seq INTEGER NOT NULL,      -- every seq <= this one was pruned (0: none)
    pruned_digest BLOB NOT NULL,      -- digest of event pruned_seq: where verification resumes
    pending INTEGER NOT NULL,
    total INTEGER NOT NULL
);
INSERT OR IGNORE INTO head VALUES (1, 0, zeroblob(32), 0, zeroblob(32), 0, 0);
-- Each worker's last attendance tap on each workplace survives pruning and restarts: capture
-- decides the next direction from it (terminal.direction). Keyed by workplace so a rebind
-- starts clean; only attendance taps write it (never a self-test). An older file may still
-- hold the table badge_state this replaced; nothing reads it any more.
CREATE TABLE IF NOT EXISTS worker_state (
    workplace TEXT NOT NULL,
    worker TEXT NOT NULL,
    kind TEXT NOT NULL,
    wall_ns INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (workplace, worker)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_count_insert AFTER INSERT ON events BEGIN
    UPDATE head SET total = total + 1, pending = pending + (NEW.state = 'pending') WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS events_count_delete AFTER DELETE ON events BEGIN
    UPDATE head SET total = total - 1, pending = pending - (OLD.state = 'pending') WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS events_count_state AFTER UPDATE OF state ON events
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE head SET pending = pending + (NEW.state = 'pending') - (OLD.state = 'pending')
    WHERE id = 1;
END;
"""

COLUMNS = "seq, body, alg, kid, sig"


def signed_from_row(row: tuple) -> SignedEvent:
    _seq, body, alg, kid, sig = row
    return SignedEvent(Envelope(body=bytes(body), alg=alg, kid=kid, sig=bytes(sig)))


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == 28  # ENOSPC


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Run ``quick_check``; raise :class:`OutboxCorrupt` (touching nothing) when it fails."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise OutboxCorrupt(
            f"{path}: outbox is unreadable ({exc}); it was left as it is: copy it aside for "
            "recovery before starting this terminal with a new data directory"
        ) from exc
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise OutboxCorrupt(
            f"{path}: outbox fails its integrity check ({'; '.join(problems[:3])}); it was left "
            "as it is: copy it aside for recovery before starting this terminal again"
        )
