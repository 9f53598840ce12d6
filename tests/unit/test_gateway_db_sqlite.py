"""The SQLite backend of the gateway database beyond the shared contract: adopting a file
written before the data layer existed, recorded migrations, and no SQL outside the layer."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.db.schema import ADDED_COLUMNS, INBOX, MIGRATIONS, RELAY, Migration
from siteclock.gateway.relay_store import RelayStore
from siteclock.gateway.store import Inbox
from siteclock.provisioning.gateway.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[2]
BEFORE = ROOT / "tests" / "fixtures" / "gateway_before_migrations.sql"
"""A gateway.db written by the separate stores of the release before the data layer (its
inbox, relay, terminal, registry, sequence and token tables, with rows), dumped as SQL."""


def _load(path: Path, script: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.close()


def _schema(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT IN ('schema_version', 'sqlite_sequence')"
        ))  # fmt: skip
    finally:
        conn.close()


def test_a_database_made_before_the_data_layer_is_adopted_as_it_is(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    _load(old, BEFORE.read_text())
    before = _schema(old)
    db = SQLiteGatewayDB(old, migrations=MIGRATIONS[:1])  # the later ones add to it
    assert db.schema_version() == 1
    # nothing rebuilt: the schema is the one the old stores made, and the rows are all there
    assert _schema(old) == before
    db.close()
    db = SQLiteGatewayDB(old)
    assert db.schema_version() == MIGRATIONS[-1].version
    inbox, relay, tokens = Inbox(db), RelayStore(db), TokenStore(db)
    assert inbox.count("t-hall-01") == 3
    assert inbox.alerts() == [("t-hall-01", 9, "seq_gap")]
    assert relay.counts() == {"queued": 3}
    assert relay.open_alerts() == {"ciao_down": "CIaO unreachable"}
    assert relay.not_before_ns() > 0
    assert [t.note for t in tokens.list()] == ["fixture"]
    assert relay.take_new(1, full=False) == 0  # its watermark is kept: nothing copied twice
    db.close()


def test_the_first_migration_makes_exactly_the_schema_of_the_old_stores(tmp_path: Path) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    _load(old, BEFORE.read_text())
    fresh = SQLiteGatewayDB(new, migrations=MIGRATIONS[:1])
    fresh.index_inbox_by_badge()  # the old file has it: its relay had run
    fresh.close()
    assert _schema(new) == _schema(old)


def test_an_older_file_gets_the_columns_added_since_in_the_same_order(tmp_path: Path) -> None:
    older, fresh = tmp_path / "older.db", tmp_path / "fresh.db"
    _load(older, INBOX + RELAY)  # as first released: no detail, no clock columns
    SQLiteGatewayDB(older).close()
    SQLiteGatewayDB(fresh).close()
    for table, added in ADDED_COLUMNS.items():
        conn = sqlite3.connect(older)
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        conn.close()
        conn = sqlite3.connect(fresh)
        assert columns == [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        conn.close()
        assert set(added) <= set(columns)


def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    SQLiteGatewayDB(path).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done(x INTEGER)")
        conn.execute("ALTER TABLE no_such_table ADD COLUMN y INTEGER")

    later = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "broken", broken))
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        SQLiteGatewayDB(path, migrations=later)
    db = SQLiteGatewayDB(path)
    assert db.schema_version() == MIGRATIONS[-1].version
    db.close()
    assert "half_done" not in _schema(path)


def test_a_new_migration_is_applied_once_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    SQLiteGatewayDB(path).close()

    def add_note(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE terminals ADD COLUMN note TEXT")

    later = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "terminal notes", add_note))
    db = SQLiteGatewayDB(path, migrations=later)
    assert db.schema_version() == later[-1].version
    assert db.migrate(later) == []  # a second time: already recorded, nothing done
    db.close()


SQL = re.compile(r"\.(execute|executemany|executescript)\(|\bCREATE (TABLE|INDEX)\b")
ALLOWED = {
    "siteclock/sqlite.py",  # the core's connection helper (settings, not statements)
}


@pytest.mark.parametrize("folder", ["gateway", "provisioning", "siteclock", "tests/support"])
def test_no_sql_outside_the_data_layer(folder: str) -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "gateway/db/" not in path.relative_to(ROOT).as_posix()
        and path.relative_to(ROOT).as_posix() not in ALLOWED
        and SQL.search(path.read_text())
    ]
    assert offenders == []


def test_each_store_waits_for_a_writer_as_long_as_before(tmp_path: Path) -> None:
    """The intake's side waits 30 s for another writer's lock; the relay's side 10 s."""
    path = tmp_path / "gateway.db"
    inbox, relay = Inbox(path), RelayStore(path)
    for store, waits_ms in ((inbox, 30_000), (relay, 10_000)):
        with store.db.reading() as conn:  # type: ignore[attr-defined]
            assert conn.execute("PRAGMA busy_timeout").fetchone() == (waits_ms,)
    inbox.close()
    relay.close()
