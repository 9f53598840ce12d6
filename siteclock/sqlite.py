"""One way to open the gateway's SQLite files, and one way to write to them.

The gateway database (``gateway/db/``, its only user on the gateway) lives in a SQLite file
that several threads and processes share (the intake, the relay, the command-line tools).
Every connection wants the same settings, and one that forgot one of them would
quietly lose the durability the effectively-once chain rests on:

* ``journal_mode=WAL``: readers never block the writer, and a crash leaves a consistent file;
* ``synchronous=FULL``: a ``COMMIT`` has reached the disk before we acknowledge anything (and
  a new file's name is synced into its directory, which SQLite does only for the WAL);
* a busy timeout, so a second writer waits for the lock instead of failing at once;
* ``isolation_level=None``: we say ``BEGIN IMMEDIATE`` ourselves (:func:`immediate`), so the
  write lock is taken before we read what we are about to decide on;
* ``check_same_thread=False``: the data layer guards each connection with its own lock.

The terminal's outbox (``terminal/outbox.py``) opens its file itself: it needs more pragmas
(``auto_vacuum`` before WAL, ``foreign_keys``, a ``quick_check``) and its own error types.

Example::

    conn = connect(tmp / "gateway.db", schema="CREATE TABLE IF NOT EXISTS t(x INTEGER);")
    with immediate(conn):
        conn.execute("INSERT INTO t VALUES (1)")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from siteclock.files import fsync_directory

DEFAULT_BUSY_TIMEOUT_S = 30.0


def connect(
    path: Path | str, *, schema: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> sqlite3.Connection:
    """Open ``path`` in WAL with ``synchronous=FULL`` and create ``schema`` in it.

    ``schema`` is a script of idempotent statements (``CREATE ... IF NOT EXISTS``,
    ``INSERT OR IGNORE``); it runs in one ``BEGIN IMMEDIATE`` transaction, so two processes
    opening a new file at once never see half a schema. ``busy_timeout_s`` is how long a
    statement waits for another connection's write lock before ``database is locked``.

    The connection is in autocommit mode: wrap writes that belong together in
    :func:`immediate`. On any error the connection is closed before the error propagates.
    """
    new_file = path != ":memory:" and not Path(path).exists()
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # executescript commits any open transaction first, so BEGIN goes in the script itself
        conn.executescript(f"BEGIN IMMEDIATE;{schema}COMMIT;")
        if new_file:  # SQLite syncs the directory for its WAL, not for a new database file
            fsync_directory(Path(path).absolute().parent)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        raise
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE``, then ``COMMIT``, or ``ROLLBACK`` on error.

    ``IMMEDIATE`` takes the write lock at the start, so what the block reads cannot change
    before it writes. Any exception (also a failed ``COMMIT``) rolls back and propagates.
    The caller holds whatever thread lock guards ``conn``.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "connect", "immediate"]
