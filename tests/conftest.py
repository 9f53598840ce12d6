"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One real PostgreSQL server for the session, started only when a test asks for it;
    each test takes a schema of its own with ``postgres.fresh_url()``."""
    with running_postgres() as cluster:
        yield cluster
