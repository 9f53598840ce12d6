"""The PostgreSQL backend of the gateway data layer: every group of operations of the SQLite
backend, on :class:`~.pg_core.PostgresCore`, with the few methods whose SQL differs.

The operation groups are taken from :class:`~.sqlite_backend.SQLiteGatewayDB` itself, so a new
``*_ops.py`` mixin added there runs here too (its SQL translated by :mod:`.dialect`). A mixin
should extend :class:`~.core.Core`; one that extends ``SQLiteCore`` still works, because
:class:`~.pg_core.PostgresCore` comes first and overrides every member of ``SQLiteCore``
(``tests/unit/test_gateway_db_dialect.py`` checks).
"""

from __future__ import annotations

from typing import Any

import psycopg

from siteclock.gateway.db.core import SQLiteCore
from siteclock.gateway.db.errors import neutral_errors
from siteclock.gateway.db.pg_core import PostgresCore
from siteclock.gateway.db.relay_admin_ops import NOT_BEFORE_KEY
from siteclock.gateway.db.sqlite_backend import SQLiteGatewayDB

OPERATION_GROUPS: tuple[type, ...] = tuple(
    base for base in SQLiteGatewayDB.__bases__ if base is not SQLiteCore
)


class PostgresOps(PostgresCore):
    """The operations PostgreSQL needs written its own way."""

    CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    """The relay's claim (``still_sendable``): each row found stays locked until the claiming
    transaction ends; rows another relay holds are skipped, and rows it already marked
    submitted are no longer sendable, so no two gateways submit one row."""
    _NEWEST_PER_WORKER = (  # each worker's newest decision, said without SQLite's bare columns
        "SELECT DISTINCT ON (worker_ref) worker_ref, kind, ciao_type, wall_ns "
        "FROM worker_sequence WHERE workplace=? AND wall_ns>=? ORDER BY worker_ref, wall_ns DESC"
    )

    def save_not_before(self, instant_ns: int) -> None:
        """As on SQLite: at once, outside any transaction of the relay's thread (a short
        connection of its own, in autocommit); a later instant never gives way to an earlier
        one."""
        with neutral_errors(), psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO relay_meta VALUES (%s, %s) ON CONFLICT(key) DO UPDATE SET "
                "value=GREATEST(relay_meta.value, excluded.value)",
                (NOT_BEFORE_KEY, instant_ns),
            )

    def drop_lease(self, name: str) -> None:
        """An advisory lock leaves nothing behind: released, it is gone."""
        self.release_lease(name)

    def requeue_audit(self) -> list[tuple[Any, ...]]:
        with self.reading() as conn:
            return conn.execute(
                "SELECT at_ns, terminal, seq, from_state, to_state, last_error, selection "
                "FROM relay_requeues ORDER BY rowid"
            ).fetchall()

    def explain_newest_stored_tap(self, future_slack_ns: int) -> str:
        """PostgreSQL's plan of ``newest_stored_tap``."""
        sql = self._newest_stored_tap_sql(future_slack_ns)  # type: ignore[attr-defined]
        with self.reading() as conn:
            rows = conn.execute("EXPLAIN " + sql, ("", 0, ""))
            return " ".join(str(row[0]) for row in rows)


class PostgresGatewayDB(PostgresOps, *OPERATION_GROUPS):  # type: ignore[misc]
    """The gateway database in one PostgreSQL database (see :class:`~.interface.GatewayDB`)."""
