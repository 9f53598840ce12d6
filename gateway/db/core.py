"""The connection side of the gateway database: transactions, migrations, leases.

:class:`Core` is what every group of operations (the ``*_ops.py`` mixins) is written against,
whatever the backend: ``self.reading()`` gives a connection for reads, ``self._writing()`` one
inside a write transaction, both speaking the SQLite dialect (``?`` placeholders, ``INSERT OR
IGNORE``...). :class:`SQLiteCore` is the SQLite backend's connection;
``gateway/db/pg_core.py`` holds PostgreSQL's, whose connections translate that dialect.

Every operation runs inside :meth:`Core.atomic` (writes) or :meth:`Core.reading` (reads), so
each is one transaction, and operations called inside an ``atomic()`` block join it: the
outermost block is ``BEGIN`` ... ``COMMIT``, an inner one a ``SAVEPOINT`` that rolls back
alone when its block raises. Driver errors leave as :mod:`gateway.db.errors` types.

On SQLite the settings are those of :mod:`siteclock.sqlite` (WAL, ``synchronous=FULL``, a
busy timeout): nothing is acknowledged before its ``COMMIT`` reached the disk.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from siteclock import sqlite
from siteclock.gateway.db.errors import neutral_errors
from siteclock.gateway.db.schema import MIGRATIONS, SCHEMA_VERSION, Migration

DEFAULT_BUSY_TIMEOUT_S = sqlite.DEFAULT_BUSY_TIMEOUT_S
"""How long a statement waits for another connection's write lock (the intake's 30 s)."""
RELAY_BUSY_TIMEOUT_S = 10.0
"""The relay's, the worker registry's and the site view's connections give up sooner, as
they did before the data layer: their loops retry on the next turn."""


class Core:
    """Transactions and migrations over a backend's connections; operations come as mixins.

    A backend provides :meth:`atomic`, :meth:`reading`, :meth:`_rows`, :meth:`_write_conn`,
    :meth:`_has_schema_table`, :meth:`hold_lease`, :meth:`release_lease` and :meth:`close`.
    """

    backend: str
    path: Path
    CLAIM_LOCK = ""
    """Appended to the relay's claim query: the backend's row locking, if it has any."""

    def close(self) -> None:
        raise NotImplementedError

    def atomic(self) -> Any:
        raise NotImplementedError

    def reading(self) -> Any:
        raise NotImplementedError

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows read by index and by column name (``row["state"]``)."""
        raise NotImplementedError

    def _write_conn(self) -> Any:
        """The connection of the current write transaction (only inside :meth:`atomic`)."""
        raise NotImplementedError

    def _has_schema_table(self) -> bool:
        raise NotImplementedError

    def table_names(self) -> list[str]:
        """Every table of the gateway database (for copying it whole), sorted."""
        raise NotImplementedError

    def _lock_for_migration(self, conn: Any) -> None:
        """Hold other processes' migrations off until this transaction ends."""

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """The connection inside :meth:`atomic`: what every write operation uses."""
        with self.atomic():
            yield self._write_conn()

    # ------------------------------------------------------------------ leases

    def hold_lease(self, name: str) -> bool:
        """Whether this database object holds the lease ``name`` now (taken when free).

        A background job that must run on one gateway at a time (roster publishing, verdict
        polling, alerts) asks before each turn and skips the turn when another holds it. A
        lease is held until :meth:`release_lease` or :meth:`close`, or until the holding
        process dies: the operating system (SQLite) or the server (PostgreSQL) frees it.
        """
        raise NotImplementedError

    def release_lease(self, name: str) -> None:
        raise NotImplementedError

    def drop_lease(self, name: str) -> None:
        """Release a lease named per process start for good (nothing of it is kept)."""
        self.release_lease(name)

    def lease_abandoned(self, name: str) -> bool:
        """Whether nobody holds the per-start lease ``name``: its holder stopped or died (the
        operating system or the server freed it). Asked by taking it: found free, it is
        dropped at once. Only for a name nobody takes again once its holder is gone, and never
        for one this object holds (it would be dropped)."""
        if not self.hold_lease(name):
            return False
        self.drop_lease(name)
        return True

    # ------------------------------------------------------------------ migrations

    def migrate(self, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
        """Apply the migrations this database has not had, each with its ``schema_version``
        row, all in one transaction (two processes opening a new database never see half a
        schema). Returns the versions applied."""
        applied: list[int] = []
        if self._current_version() >= migrations[-1].version:
            return applied  # up to date: no write transaction (the demo reads while it runs)
        with self._writing() as conn:
            self._lock_for_migration(conn)
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
        return self.schema_version() if self._has_schema_table() else 0

    def schema_version(self) -> int:
        with self.reading() as conn:
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
        return int(version)


class SQLiteCore(Core):
    """One SQLite connection behind one re-entrant lock."""

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
        self._leases: dict[str, IO[bytes]] = {}
        with neutral_errors():
            self._conn = sqlite.connect(self.path, schema="", busy_timeout_s=busy_timeout_s)
        try:
            self.migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            for name in list(self._leases):
                self.release_lease(name)
            self._conn.close()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def atomic(self) -> Iterator[Any]:
        """One write transaction; nested blocks are savepoints of the enclosing one.

        The outermost block takes the write lock at once (``BEGIN IMMEDIATE``), so what it
        reads cannot change before it writes. Any exception rolls back the block it left (and
        only that block, for an inner one) and propagates. Yields the database itself.
        """
        with self._lock, neutral_errors():
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
        with self._lock, neutral_errors():
            yield self._conn

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.reading() as conn:
            conn.row_factory = sqlite3.Row
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.row_factory = None

    def _write_conn(self) -> sqlite3.Connection:
        return self._conn

    def _has_schema_table(self) -> bool:
        with self.reading() as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
        return found is not None

    def table_names(self) -> list[str]:
        with self.reading() as conn:
            return [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # ------------------------------------------------------------------ leases

    def hold_lease(self, name: str) -> bool:
        """A lock file beside the database (``gateway.db.lease-<name>``) held with ``flock``:
        one holder per file across processes, freed by the kernel when the holder dies."""
        with self._lock:
            if name in self._leases:
                return True
            handle = open(f"{self.path}.lease-{name}", "ab")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            os.chmod(handle.name, 0o600)
            self._leases[name] = handle
            return True

    def release_lease(self, name: str) -> None:
        with self._lock:
            handle = self._leases.pop(name, None)
            if handle is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()

    def drop_lease(self, name: str) -> None:
        """Release the lease and remove its file while still holding it (a per-start name:
        one file per relay start would otherwise pile up beside the database)."""
        with self._lock:
            handle = self._leases.get(name)
            if handle is not None:
                Path(handle.name).unlink(missing_ok=True)
            self.release_lease(name)
