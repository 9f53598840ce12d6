"""Storage faults under a real ``siteclock terminal``: a full disk, a disk that turns
read-only, a corrupted database page (docs/durability.md says what each does, and why).

The data directory is on the power-loss filesystem (tests/support/powerfs.py), which can be made
full (``capacity``) or read-only at any moment, as an SD card does. In every case: a tap the
terminal could not record is refused in red (``refused`` in the feedback journal, never
``saved``), the log names the cause, everything recorded before is kept, and taps are recorded
again once the cause is gone, with no gap and no reused sequence number.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from siteclock.hw import sim
from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox, verify_cli
from tests.support.power_cuts import TerminalUnderCuts
from tests.support.powerfs import fuse_available
from tests.support.terminal_files import WORKPLACE, answered
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]


@pytest.fixture
def terminal(tmp_path: Path):
    with TerminalUnderCuts(tmp_path, seed=1) as t:
        yield t


def tap(t: TerminalUnderCuts, badge: str) -> dict:
    """Tap once and return the journal line that answered it."""
    before = len(answered(t.journal))
    sim.send_taps(str(t.sock), [badge], timeout=10)
    return wait_for(lambda: answered(t.journal)[before:], f"an answer to {badge}")[0]


def running(t: TerminalUnderCuts) -> subprocess.Popen:
    proc = t.start_terminal()
    assert t.wait_ready(proc), t.log.read_text()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def held(t: TerminalUnderCuts) -> list:
    box = Outbox(t.data / "outbox.db", signer=identity.load(t.data / "terminal.key"),
                 terminal_id=t.terminal_id, workplace=WORKPLACE)  # fmt: skip
    try:
        return list(box.events())
    finally:
        box.close()


def verifies(t: TerminalUnderCuts) -> bool:
    pub = identity.public_path(t.data / "terminal.key")
    return verify_cli(["--db", str(t.data / "outbox.db"), "--public-key", str(pub)]) == 0


def used_bytes(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_full_disk_refuses_taps_visibly_keeps_the_rest_and_recovers(
    terminal: TerminalUnderCuts,
) -> None:
    proc = running(terminal)
    try:
        saved = [tap(terminal, f"sim:A{i:03X}") for i in range(3)]
        assert {line["pattern"] for line in saved} == {"unknown_badge"}
        terminal.fs.control(f"capacity {used_bytes(terminal.fs.mount) + 16384}")
        answers = [tap(terminal, f"sim:B{i:03X}") for i in range(12)]
        refused = [a for a in answers if a["pattern"] == "refused"]
        assert refused, f"a full disk refused nothing: {answers}"
        assert all(a["pattern"] in ("unknown_badge", "refused") for a in answers)
        log = terminal.log.read_text()
        assert "outbox full" in log
        terminal.fs.control("capacity none")  # the card has room again (pruned, replaced)
        after = tap(terminal, "sim:C000")
        assert after["pattern"] == "unknown_badge"
    finally:
        stop(proc)
    events = held(terminal)
    recorded = [a for a in [*saved, *answers, after] if a["pattern"] != "refused"]
    assert [e.event.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.event.seq, e.event.badge) for e in events] == [
        (a["seq"], a["badge"]) for a in recorded
    ]
    assert verifies(terminal)


def test_read_only_disk_refuses_taps_keeps_the_rest_and_restarts_clean(
    terminal: TerminalUnderCuts,
) -> None:
    proc = running(terminal)
    try:
        before = [tap(terminal, f"sim:D{i:03X}") for i in range(3)]
        terminal.fs.control("readonly on")  # the kernel remounted the card read-only
        answers = [tap(terminal, f"sim:E{i:03X}") for i in range(3)]
        assert [a["pattern"] for a in answers] == ["refused"] * 3
        assert "read-only file system" in terminal.log.read_text()
    finally:
        stop(proc)
    # Started on a read-only card, the terminal says so and exits (systemd retries; the
    # gateway sees the heartbeat stop): it never answers a tap it cannot record.
    proc = terminal.start_terminal()
    assert proc.wait(timeout=30) == 2
    assert not terminal.sock.exists()
    assert "is on a read-only file system" in terminal.log.read_text().splitlines()[-1]
    terminal.fs.control("readonly off")  # repaired and rebooted
    proc = running(terminal)
    try:
        after = tap(terminal, "sim:F000")
    finally:
        stop(proc)
    events = held(terminal)
    assert [(e.event.seq, e.event.badge) for e in events] == [
        (a["seq"], a["badge"]) for a in [*before, after]
    ]
    assert verifies(terminal)


def test_corrupted_page_stops_the_terminal_with_the_file_untouched(
    terminal: TerminalUnderCuts,
) -> None:
    proc = running(terminal)
    try:
        for i in range(20):
            tap(terminal, f"sim:7{i:03X}")
    finally:
        stop(proc)
    db = terminal.data / "outbox.db"
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        sql = "SELECT rootpage FROM sqlite_master WHERE name = 'events'"
        root = conn.execute(sql).fetchone()[0]
    finally:
        conn.close()
    with db.open("r+b") as fh:  # a flash page gone bad: the events table's root page
        fh.seek((root - 1) * page_size)
        fh.write(random.Random(5).randbytes(page_size))
        fh.flush()
        os.fsync(fh.fileno())
    damaged = hashlib.sha256(db.read_bytes()).hexdigest()

    proc = terminal.start_terminal()
    assert proc.wait(timeout=30) == 2
    last = terminal.log.read_text().splitlines()[-1]
    assert "outbox" in last
    assert "left as it is" in last
    assert hashlib.sha256(db.read_bytes()).hexdigest() == damaged, "the evidence was rewritten"
    # verify-chain: "cannot read" (2), never "BROKEN" (1): damage is not forgery
    pub = identity.public_path(terminal.data / "terminal.key")
    assert verify_cli(["--db", str(db), "--public-key", str(pub)]) == 2
