"""The backends the gateway-database contract runs on: SQLite, and a real PostgreSQL server
started for the session (``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from siteclock.gateway.db import GatewayDB, SQLiteGatewayDB
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB


@pytest.fixture(params=["sqlite", "postgresql"])
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], GatewayDB]]:
    """Opens the same database again on each call (a second process, a restart)."""
    opened: list[GatewayDB] = []
    if request.param == "sqlite":

        def connect() -> GatewayDB:
            return SQLiteGatewayDB(tmp_path / "gateway.db")
    else:
        url = request.getfixturevalue("postgres").fresh_url()

        def connect() -> GatewayDB:
            return PostgresGatewayDB(url)

    def make() -> GatewayDB:
        db = connect()
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def db(open_db: Callable[[], GatewayDB]) -> GatewayDB:
    return open_db()
