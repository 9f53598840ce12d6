"""The backends the gateway-database contract runs on: SQLite now; PostgreSQL joins here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from siteclock.gateway.db import GatewayDB, SQLiteGatewayDB

BACKENDS: dict[str, Callable[[Path], GatewayDB]] = {
    "sqlite": lambda tmp: SQLiteGatewayDB(tmp / "gateway.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], GatewayDB]]:
    """Opens the same database again on each call (a second process, a restart)."""
    opened: list[GatewayDB] = []

    def make() -> GatewayDB:
        db = BACKENDS[request.param](tmp_path)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def db(open_db: Callable[[], GatewayDB]) -> GatewayDB:
    return open_db()
