"""The PostgreSQL connection side of the gateway database: a psycopg 3 pool, transactions
per thread, the SQLite dialect translated, and leases as advisory locks.

Each thread that opens :meth:`PostgresCore.atomic` borrows one pooled connection for the
whole block (``BEGIN`` ... ``COMMIT``, inner blocks as savepoints), and its reads inside the
block use that connection. Reads outside a block borrow any pooled connection in autocommit.
Write transactions of one process take turns behind one lock, as they do on SQLite, so the
operations' read-then-write steps behave the same on both backends; several processes (several
gateways) share the database as PostgreSQL allows, and the relay's claim of rows to submit is
``FOR UPDATE SKIP LOCKED`` (``postgres_backend.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool

from siteclock.gateway.db.core import DEFAULT_BUSY_TIMEOUT_S, Core
from siteclock.gateway.db.dialect import (
    Row,
    qualify_upsert,
    replace_as_upsert,
    row_class,
    table_of_replace,
    table_of_upsert,
    to_postgres,
)
from siteclock.gateway.db.errors import neutral_errors
from siteclock.gateway.db.schema import MIGRATIONS, Migration

POOL_SIZE = 4
"""Connections per gateway process: the intake, the relay, the registry and one for reads."""
POOL_WAIT_S = 30.0
"""How long an operation waits for a free pooled connection before failing as operational."""
MIGRATION_LOCK = "siteclock.gateway.migrate"
LEASE_KEY = "hashtextextended(current_schema() || '/' || %s, 0)"
"""The advisory lock key of a lease: its name within the schema, so gateways of two sites
kept in two schemas of one database never hold each other's leases."""
LEASE_SESSION_SETTINGS = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000"
)
"""The server's side of the lease session (TCP only; a Unix socket needs none): it probes an
idle client after 10 s and drops it after 3 unanswered probes 5 s apart, or when its sent data
stays unacknowledged 25 s, so a vanished gateway's leases are freed within about 25 s."""


class _WholeNumeric(NumericLoader):
    """``numeric`` as ``int`` when whole (``sum()`` of integers is numeric in PostgreSQL and an
    integer in SQLite), else ``float`` as SQLite gives it; never ``Decimal``."""

    def load(self, data: Any) -> Any:
        value = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


def _rows_factory(cursor: psycopg.Cursor[Any]) -> Any:
    """psycopg row factory: :class:`~.dialect.Row` (index and name access)."""
    description = cursor.description
    if description is None:
        return tuple
    return row_class(tuple(column.name for column in description))


def redacted(url: str) -> str:
    """``url`` without its password, for logs and ``db.path``."""
    params = conninfo_to_dict(url)
    params.pop("password", None)
    host = params.get("host", "")
    port = params.get("port", "")
    return f"postgresql://{params.get('user', '')}@{host}:{port}/{params.get('dbname', '')}"


class PgConnection:
    """A psycopg connection that takes the SQLite dialect (see :mod:`.dialect`) and answers
    like ``sqlite3``: ``execute`` and ``executemany`` return the cursor."""

    def __init__(self, raw: psycopg.Connection[Any], catalog: Catalog) -> None:
        self.raw = raw
        self._catalog = catalog

    def _sql(self, sql: str, with_params: bool) -> str:
        table = table_of_replace(sql)
        if table is not None:
            key, columns = self._catalog.shape(self.raw, table)
            sql = replace_as_upsert(sql, key, columns)
        table = table_of_upsert(sql)
        if table is not None:
            sql = qualify_upsert(sql, table, self._catalog.shape(self.raw, table)[1])
        return to_postgres(sql, with_params)

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.execute(self._sql(sql, args is not None), args)  # type: ignore[arg-type]
        return cursor

    def executemany(self, sql: str, rows: Any) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        rows = list(rows)
        if rows:
            cursor.executemany(self._sql(sql, True), rows)  # type: ignore[arg-type]
        return cursor


class Catalog:
    """Primary keys and columns of tables, read from the server once per table (and again
    after a migration)."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[list[str], list[str]]] = {}

    def forget(self) -> None:
        self._shapes.clear()

    def shape(self, raw: psycopg.Connection[Any], table: str) -> tuple[list[str], list[str]]:
        if table not in self._shapes:
            columns = [
                r[0]
                for r in raw.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                )
            ]
            key = [
                r[0]
                for r in raw.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                    "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (table,),
                )
            ]
            self._shapes[table] = (key, columns)
        return self._shapes[table]


class _ThreadState(threading.local):
    conn: PgConnection | None = None
    depth: int = 0


class PostgresCore(Core):
    """A pool of connections to one PostgreSQL database (the ``url``)."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        migrations: tuple[Migration, ...] = MIGRATIONS,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self.path = Path(redacted(url))
        self._catalog = Catalog()
        self._lock = threading.RLock()
        self._state = _ThreadState()
        self._lease_lock = threading.Lock()
        self._lease_conn: psycopg.Connection[Any] | None = None
        self._leases: set[str] = set()
        lock_timeout_ms = max(1, int(busy_timeout_s * 1000))

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"SET lock_timeout = {lock_timeout_ms}")
            conn.adapters.register_loader("numeric", _WholeNumeric)

        with neutral_errors():
            # One plain connection first: a server that is down or refuses us fails now, with
            # its own reason, instead of as the pool's timeout after POOL_WAIT_S.
            psycopg.connect(url, connect_timeout=10).close()
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max(2, pool_size),
                kwargs={"autocommit": True, "row_factory": _rows_factory},
                configure=configure,
                check=ConnectionPool.check_connection,
                timeout=POOL_WAIT_S,
                name="siteclock-gateway-db",
                open=False,
            )
            self._pool.open(wait=True, timeout=POOL_WAIT_S)
        try:
            self.migrate(migrations)
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        with self._lease_lock:
            if self._lease_conn is not None:
                self._lease_conn.close()  # frees every advisory lock it held
                self._lease_conn = None
            self._leases.clear()
        self._pool.close()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def atomic(self) -> Iterator[Any]:
        """One write transaction; nested blocks are savepoints of the enclosing one. Any
        exception rolls back the block it left (only that block, for an inner one) and
        propagates. Yields the database itself."""
        state = self._state
        if state.depth:
            with neutral_errors():
                yield from self._savepoint(state)
            return
        with self._lock, neutral_errors(), self._pool.connection() as raw:
            state.conn = PgConnection(raw, self._catalog)
            raw.execute("BEGIN")
            state.depth = 1
            try:
                yield self
            except BaseException:
                if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.execute("ROLLBACK")
                raise
            else:
                try:
                    raw.execute("COMMIT")
                except BaseException:
                    if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        raw.execute("ROLLBACK")
                    raise
            finally:
                state.depth = 0
                state.conn = None

    def _savepoint(self, state: _ThreadState) -> Iterator[Any]:
        assert state.conn is not None
        raw = state.conn.raw
        depth = state.depth
        savepoint = f"atomic_{depth}"
        raw.execute(f"SAVEPOINT {savepoint}")
        state.depth += 1
        try:
            yield self
        except BaseException:
            state.depth = depth
            raw.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            raw.execute(f"RELEASE SAVEPOINT {savepoint}")
            raise
        state.depth = depth
        raw.execute(f"RELEASE SAVEPOINT {savepoint}")

    @contextmanager
    def reading(self) -> Iterator[PgConnection]:
        """The connection of this thread's transaction, or a pooled one in autocommit."""
        with neutral_errors():
            if self._state.conn is not None:
                yield self._state.conn
                return
            with self._pool.connection() as raw:
                yield PgConnection(raw, self._catalog)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.reading() as conn:
            return conn.execute(sql, args).fetchall()

    def _write_conn(self) -> PgConnection:
        assert self._state.conn is not None, "only inside atomic()"
        return self._state.conn

    @property
    def in_transaction(self) -> bool:
        return self._state.depth > 0

    def migrate(self, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
        applied = super().migrate(migrations)
        if applied:
            self._catalog.forget()  # a migration may have added columns
        return applied

    def _has_schema_table(self) -> bool:
        with self.reading() as conn:
            (found,) = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        return bool(found)

    def table_names(self) -> list[str]:
        with self.reading() as conn:
            return [
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE "
                    "table_schema = current_schema() AND table_type = 'BASE TABLE' "
                    "ORDER BY table_name"
                )
            ]

    def reset_identities(self) -> None:
        """Move each identity column's sequence past the largest value stored (rows copied
        in with their ids must not collide with the next insert)."""
        with self._writing() as conn:
            found = conn.raw.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND is_identity = 'YES'"
            ).fetchall()
            for table, column in found:
                conn.raw.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                    f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
                )

    def _lock_for_migration(self, conn: PgConnection) -> None:
        # Two gateways starting on a new database: the second waits, then finds it migrated.
        conn.raw.execute(f"SELECT pg_advisory_xact_lock({LEASE_KEY})", (MIGRATION_LOCK,))

    # ------------------------------------------------------------------ leases

    def hold_lease(self, name: str) -> bool:
        """A session advisory lock (``pg_try_advisory_lock``) on a connection of its own,
        outside the pool: held while that connection lives; the server frees it when the
        gateway dies or its connection is cut."""
        with self._lease_lock, neutral_errors():
            conn = self._lease_connection()
            if name in self._leases:
                return True
            (got,) = conn.execute(f"SELECT pg_try_advisory_lock({LEASE_KEY})", (name,)).fetchone()
            if got:
                self._leases.add(name)
            return bool(got)

    def release_lease(self, name: str) -> None:
        with self._lease_lock, neutral_errors():
            if name not in self._leases:
                return
            self._leases.discard(name)
            if self._lease_conn is not None and not self._lease_conn.closed:
                self._lease_conn.execute(f"SELECT pg_advisory_unlock({LEASE_KEY})", (name,))

    def _lease_connection(self) -> psycopg.Connection[Any]:
        """The lease connection, checked alive; a new one (holding nothing) when it was lost."""
        conn = self._lease_conn
        if conn is not None:
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()
                self._leases.clear()  # the server freed them with the session
        self._lease_conn = psycopg.connect(self.url, autocommit=True)
        # A gateway cut off (host down, network gone) must lose its leases within seconds, not
        # after the operating system's two-hour keepalive: other gateways take its jobs over
        # and recover its in-flight rows (gateway.relay_instances) once the server lets go.
        self._lease_conn.execute(LEASE_SESSION_SETTINGS)
        return self._lease_conn
