"""siteclock.sqlite: the settings every gateway store relies on, and all-or-nothing writes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from siteclock import sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS t(x INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('version', 0);
"""


def test_connect_sets_durability_and_creates_schema(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "a.db", schema=SCHEMA, busy_timeout_s=7.5)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (7500,)
        assert conn.isolation_level is None
        assert not conn.in_transaction
        assert conn.execute("SELECT value FROM meta").fetchall() == [(0,)]
    finally:
        conn.close()
    # opening again keeps what is there: the schema script is idempotent
    again = sqlite.connect(tmp_path / "a.db", schema=SCHEMA)
    try:
        assert again.execute("SELECT count(*) FROM meta").fetchone() == (1,)
        assert again.execute("PRAGMA busy_timeout").fetchone() == (30000,)
    finally:
        again.close()


def test_connect_creates_all_of_the_schema_or_none(tmp_path: Path) -> None:
    broken = "CREATE TABLE good(x INTEGER);\nCREATE TABLE oops(;\n"
    with pytest.raises(sqlite3.OperationalError):
        sqlite.connect(tmp_path / "b.db", schema=broken)
    check = sqlite3.connect(tmp_path / "b.db")
    try:
        assert check.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        check.close()


def test_connection_may_be_used_from_another_thread(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "c.db", schema=SCHEMA)
    seen: list[object] = []
    worker = threading.Thread(
        target=lambda: seen.append(conn.execute("SELECT count(*) FROM t").fetchone())
    )
    worker.start()
    worker.join()
    conn.close()
    assert seen == [(0,)]


def test_immediate_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "d.db", schema=SCHEMA)
    with sqlite.immediate(conn) as db:
        assert db is conn
        assert conn.in_transaction
        db.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction

    def half_done() -> None:
        with sqlite.immediate(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("half done")

    with pytest.raises(RuntimeError, match="half done"):
        half_done()
    assert not conn.in_transaction
    conn.close()
    # what another connection sees is what reached the file
    other = sqlite3.connect(tmp_path / "d.db")
    try:
        assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        other.close()


def test_immediate_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    first = sqlite.connect(path, schema=SCHEMA)
    second = sqlite.connect(path, schema=SCHEMA, busy_timeout_s=0.05)
    try:
        with sqlite.immediate(first), pytest.raises(sqlite3.OperationalError, match="locked"):
            second.execute("BEGIN IMMEDIATE")
        with sqlite.immediate(second):
            second.execute("INSERT INTO t VALUES (3)")
        assert first.execute("SELECT x FROM t").fetchall() == [(3,)]
    finally:
        first.close()
        second.close()
