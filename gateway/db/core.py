"""The SQLite connection of the gateway database: settings, transactions, migrations.

One :class:`SQLiteCore` holds one connection behind one re-entrant lock. Every operation of the
data layer runs inside :meth:`SQLiteCore.atomic` (writes) or :meth:`SQLiteCore.reading`
(reads), so each is one transaction, and operations called inside an ``atomic()`` block join
it: the outermost block is ``BEGIN IMMEDIATE`` ... ``COMMIT``, an inner one a ``SAVEPOINT``
that rolls back alone when its block raises.

The settings are those of :mod:`siteclock.sqlite` (WAL, ``synchronous=FULL``, a busy timeout):
nothing is acknowledged before its ``COMMIT`` reached the disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from siteclock import sqlite
from siteclock.gateway.db.schema import MIGRATIONS, SCHEMA_VERSION, Migration

DEFAULT_BUSY_TIMEOUT_S = sqlite.DEFAULT_BUSY_TIMEOUT_S
"""How long a statement waits for another connection's write lock (the intake's 30 s)."""
RELAY_BUSY_TIMEOUT_S = 10.0
"""The relay's, the worker registry's and the site view's connections give up sooner, as
they did before the data layer: their loops retry on the next turn."""


class SQLiteCore:
    """The connection, its lock, ``atomic()`` and the migrations; operations come as mixins."""

    backend = "sqlite"

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        migrations: tuple[Migration, ...] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite.connect(self.path, schema="", busy_timeout_s=busy_timeout_s)
        try:
            self.migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def atomic(self) -> Iterator[Any]:
        """One write transaction; nested blocks are savepoints of the enclosing one.

        The outermost block takes the write lock at once (``BEGIN IMMEDIATE``), so what it
        reads cannot change before it writes. Any exception rolls back the block it left (and
        only that block, for an inner one) and propagates. Yields the database itself.
        """
        with self._lock:
            depth = self._depth
            savepoint = f"atomic_{depth}"
            self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth = depth
                if depth == 0:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                elif self._conn.in_transaction:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    self._conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth = depth
            if depth:
                self._conn.execute(f"RELEASE {savepoint}")
                return
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (autocommit outside ``atomic()``), under the lock."""
        with self._lock:
            yield self._conn

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows read by column name (``row["state"]``), as the relay and its tools use them."""
        with self.reading() as conn:
            conn.row_factory = sqlite3.Row
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.row_factory = None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection inside :meth:`atomic`: what every write operation uses."""
        with self.atomic():
            yield self._conn

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # ------------------------------------------------------------------ migrations

    def migrate(self, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
        """Apply the migrations this file has not had, each with its ``schema_version`` row,
        all in one transaction (two processes opening a new file never see half a schema).
        Returns the versions applied."""
        applied: list[int] = []
        if self._current_version() >= migrations[-1].version:
            return applied  # up to date: no write transaction (the demo reads while it runs)
        with self._writing() as conn:
            conn.execute(SCHEMA_VERSION)
            (current,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
            for migration in migrations:
                if migration.version <= current:
                    continue
                migration.apply(conn)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time_ns()),
                )
                applied.append(migration.version)
        return applied

    def _current_version(self) -> int:
        try:
            return self.schema_version()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise

    def schema_version(self) -> int:
        with self.reading() as conn:
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
        return int(version)
