"""The power-loss filesystem itself (tests/support/powerfs.py) loses exactly what POSIX allows.

The terminal's power-cut tests mean something only if the filesystem under them really drops
unsynced data and unsynced names; these check it does, and that SQLite runs on it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from siteclock import files
from tests.support.powerfs import PowerFS, fuse_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]


@pytest.fixture
def fs(tmp_path: Path):
    with PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as mounted:
        yield mounted


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_a_cut_keeps_synced_data_and_names_only(fs: PowerFS) -> None:
    m = fs.mount
    _write(m / "synced", b"kept", sync=True)
    _write(m / "unsynced-data", b"lost", sync=False)
    files.make_dir_durably(m / "d" / "e")  # syncs the root: both names above are durable
    _write(m / "name-not-synced", b"data synced", sync=True)
    fs.cut("drop")
    fs.start()
    assert (m / "synced").read_bytes() == b"kept"
    assert (m / "unsynced-data").read_bytes() == b""
    assert not (m / "name-not-synced").exists()
    assert (m / "d" / "e").is_dir()


def test_a_rename_without_a_directory_fsync_is_undone(fs: PowerFS) -> None:
    m = fs.mount
    files.write_durably(m / "f", b"old")
    _write(m / "f.new", b"new", sync=True)
    os.replace(m / "f.new", m / "f")
    fs.cut("drop")
    fs.start()
    assert (m / "f").read_bytes() == b"old"
    files.replace_durably(m / "f", m / "g")
    fs.cut("drop")
    fs.start()
    assert (m / "g").read_bytes() == b"old"
    assert not (m / "f").exists()


def test_a_torn_cut_keeps_a_sector_prefix_of_the_last_write(fs: PowerFS) -> None:
    m = fs.mount
    _write(m / "t", b"", sync=True)
    files.fsync_directory(m)
    seen = set()
    for seed in range(12):
        _write(m / "t", b"", sync=True)
        _write(m / "t", bytes([seed + 1]) * 4096, sync=False)
        fs.cut("torn", seed=seed)
        fs.start()
        data = (m / "t").read_bytes()
        assert len(data) % 512 == 0, "a torn write keeps whole sectors"
        assert set(data) <= {seed + 1}
        seen.add(len(data))
    assert len(seen) > 2, f"torn cuts kept always the same length: {seen}"


def test_sqlite_wal_full_sync_keeps_every_commit_and_loses_unsynced(fs: PowerFS) -> None:
    db = sqlite3.connect(fs.mount / "a.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE t(x)")
    for i in range(50):
        db.execute("INSERT INTO t VALUES (?)", (i,))
    db.execute("PRAGMA synchronous = OFF")  # from here COMMIT does not fsync: may be lost
    for i in range(50):
        db.execute("INSERT INTO t VALUES (?)", (i,))
    fs.cut("drop")  # the connection is left open: the power went under it
    fs.start()
    db.close()
    again = sqlite3.connect(fs.mount / "a.db")
    try:
        assert again.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert again.execute("SELECT count(*) FROM t").fetchone() == (50,)
    finally:
        again.close()


def test_capacity_and_read_only_answer_like_a_disk(fs: PowerFS) -> None:
    m = fs.mount
    fs.control("capacity 8192")
    with pytest.raises(OSError, match="No space") as full:
        _write(m / "big", b"x" * 10000, sync=True)
    assert full.value.errno == 28  # ENOSPC
    fs.control("capacity none")
    fs.control("readonly on")
    with pytest.raises(OSError, match="Read-only") as ro:
        _write(m / "other", b"x", sync=True)
    assert ro.value.errno == 30  # EROFS
    fs.control("readonly off")
    _write(m / "other", b"x", sync=True)
