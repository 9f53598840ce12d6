"""The gateway data layer: one object owns the gateway database.

:class:`GatewayDB` is the interface (what any backend provides: ``atomic()``, migrations, and
one named operation per read or state change); :class:`SQLiteGatewayDB` is the SQLite backend,
the only one so far. No SQL lives outside this package. See docs/architecture.md.

Example::

    db, owned = open_gateway_db(tmp / "gateway.db")
    with db.atomic():            # one transaction; nested atomic() blocks are savepoints
        db.store_events(rows)
"""

from __future__ import annotations

from pathlib import Path

from siteclock.gateway.db.core import DEFAULT_BUSY_TIMEOUT_S, RELAY_BUSY_TIMEOUT_S
from siteclock.gateway.db.interface import GatewayDB
from siteclock.gateway.db.sqlite_backend import SQLiteGatewayDB


def open_gateway_db(
    db: Path | str | GatewayDB, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> tuple[GatewayDB, bool]:
    """``db`` itself when it is already open, else the SQLite database at that path, migrated
    (its statements wait ``busy_timeout_s`` for another writer's lock); and whether the caller
    opened it (and so closes it)."""
    if isinstance(db, (str, Path)):
        return SQLiteGatewayDB(db, busy_timeout_s=busy_timeout_s), True
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
    "GatewayDB",
    "OnGatewayDB",
    "SQLiteGatewayDB",
    "open_gateway_db",
]
