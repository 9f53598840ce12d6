"""The gateway data layer: one object owns the gateway database.

:class:`GatewayDB` is the interface (what any backend provides: ``atomic()``, migrations, and
one named operation per read or state change); :class:`SQLiteGatewayDB` is the SQLite backend
(the default, one file), ``PostgresGatewayDB`` (``postgres_backend.py``) the PostgreSQL one
for several gateways on one database. No SQL lives outside this package. See
docs/architecture.md and docs/postgresql.md.

Example::

    db, owned = open_gateway_db(tmp / "gateway.db")        # or "postgresql://gw@db-host/siteclock"
    with db.atomic():            # one transaction; nested atomic() blocks are savepoints
        db.store_events(rows)
"""

from __future__ import annotations

from pathlib import Path

from siteclock.gateway.db.core import DEFAULT_BUSY_TIMEOUT_S, RELAY_BUSY_TIMEOUT_S
from siteclock.gateway.db.errors import DatabaseError, IntegrityError, OperationalError
from siteclock.gateway.db.interface import GatewayDB
from siteclock.gateway.db.sqlite_backend import SQLiteGatewayDB

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"


def is_postgres_url(db: object) -> bool:
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def sqlite_path(db: Path | str) -> Path:
    """The file of a SQLite location: a path, or ``sqlite://`` followed by the path
    (``sqlite:///var/lib/siteclock/gateway.db`` is ``/var/lib/siteclock/gateway.db``)."""
    if isinstance(db, str) and db.startswith(SQLITE_SCHEME):
        return Path(db.removeprefix(SQLITE_SCHEME))
    return Path(db)


def db_location(text: str) -> Path | str:
    """A database named on a command line (``--db``): a PostgreSQL URL as it is, else the
    SQLite file's path."""
    return text if is_postgres_url(text) else sqlite_path(text)


def missing_file(location: Path | str) -> Path | None:
    """The SQLite file a command was pointed at when it does not exist (a typo would otherwise
    create an empty database); None for a URL or an existing file."""
    if is_postgres_url(location):
        return None
    path = sqlite_path(location)
    return None if path.exists() else path


def open_gateway_db(
    db: Path | str | GatewayDB, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> tuple[GatewayDB, bool]:
    """``db`` itself when it is already open, else the database it names, migrated: a
    ``postgresql://`` URL, or a SQLite file (a path or a ``sqlite://`` URL). Its statements wait
    ``busy_timeout_s`` for another writer's lock. Also returns whether the caller opened it
    (and so closes it)."""
    if is_postgres_url(db):
        from siteclock.gateway.db.postgres_backend import PostgresGatewayDB

        return PostgresGatewayDB(str(db), busy_timeout_s=busy_timeout_s), True
    if isinstance(db, (str, Path)):
        return SQLiteGatewayDB(sqlite_path(db), busy_timeout_s=busy_timeout_s), True
    return db, False


class OnGatewayDB:
    """Base of the facades on the gateway database (inbox, registry, relay store, rosters):
    they use the :class:`GatewayDB` they are given, or open the file at a path and then close it
    on :meth:`close` (a shared database is closed by whoever opened it)."""

    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S

    def __init__(self, db: Path | str | GatewayDB) -> None:
        self.db, self._owned = open_gateway_db(db, busy_timeout_s=self.busy_timeout_s)
        self.path = self.db.path

    def close(self) -> None:
        if self._owned:
            self.db.close()


__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "RELAY_BUSY_TIMEOUT_S",
    "DatabaseError",
    "GatewayDB",
    "IntegrityError",
    "OnGatewayDB",
    "OperationalError",
    "SQLiteGatewayDB",
    "db_location",
    "is_postgres_url",
    "missing_file",
    "open_gateway_db",
    "sqlite_path",
]
