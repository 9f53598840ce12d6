"""The outbox: durable, signed, chained, never losing an unsent event, honest when full."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    GENESIS_HASH,
    ChainBroken,
    ClockState,
    Kind,
    Outcome,
    Verdict,
    verify_chain,
)
from siteclock.terminal.outbox import Outbox, OutboxCorrupt, OutboxFull, verify_cli

SYNCED = ClockState(synced=True, maxerror_us=20_000, source="adjtimex")
TID, WORKPLACE = "t-0001", "ABCDEFGH12345"


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate()


@pytest.fixture
def keys(signer: Ed25519Signer) -> dict[str, bytes]:
    return {signer.kid: signer.public_key_bytes()}


def open_box(path: Path, signer: Ed25519Signer) -> Outbox:
    return Outbox(path, signer=signer, terminal_id=TID, workplace=WORKPLACE)


@pytest.fixture
def fresh_box(tmp_path: Path, signer: Ed25519Signer):
    box = open_box(tmp_path / "outbox.db", signer)
    yield box
    box.close()


def tap(box: Outbox, badge: str = "sim:0A", kind: Kind = Kind.IN, **kw):
    return box.append(kind=kind, badge=badge, clock=SYNCED, **kw)


def test_append_numbers_links_and_signs(fresh_box: Outbox, keys) -> None:
    first = tap(fresh_box, flags=["odd_sequence"])
    second = tap(fresh_box, kind=Kind.OUT, wall_ns=123, boot_id="b", boot_ns=7)
    assert (first.event.seq, second.event.seq) == (1, 2)
    assert first.event.prev_hash == GENESIS_HASH
    assert second.event.prev_hash == first.digest
    assert first.event.flags == ("odd_sequence",)
    assert (second.event.wall_ns, second.event.boot_id, second.event.boot_ns) == (123, "b", 7)
    assert verify_chain([first, second], keys) == 2


def test_unsent_is_ordered_paged_and_shrinks_only_on_ack(fresh_box: Outbox) -> None:
    seqs = [tap(fresh_box).event.seq for _ in range(6)]
    assert [s.event.seq for s in fresh_box.unsent()] == seqs
    assert [s.event.seq for s in fresh_box.unsent(after_seq=2, limit=3)] == [3, 4, 5]
    assert fresh_box.mark_delivered([2, 4, 4, 99]) == 2
    assert fresh_box.mark_delivered([2, 4]) == 0  # idempotent
    assert [s.event.seq for s in fresh_box.unsent()] == [1, 3, 5, 6]


def test_stats_counts_depth_oldest_and_total(fresh_box: Outbox) -> None:
    assert fresh_box.stats().depth == 0
    assert fresh_box.stats().oldest_unsent_wall_ns is None
    tap(fresh_box, wall_ns=100)
    tap(fresh_box, wall_ns=200)
    tap(fresh_box, wall_ns=300)
    fresh_box.mark_delivered([1])
    stats = fresh_box.stats()
    assert (stats.depth, stats.oldest_unsent_wall_ns, stats.last_seq, stats.total) == (
        2, 200, 3, 3,
    )  # fmt: skip
    fresh_box.prune_delivered(older_than_ns=2**62)
    assert fresh_box.stats().total == 2


def test_prune_keeps_unsent_and_recent_and_keeps_the_held_tail_contiguous(
    tmp_path: Path, signer: Ed25519Signer, keys
) -> None:
    box = open_box(tmp_path / "o.db", signer)
    for _ in range(10):
        tap(box)
    box.mark_delivered([1, 2, 3, 5, 6])  # 4 is unsent: pruning must stop there
    assert box.prune_delivered(older_than_ns=2**62, batch=2) == 3
    assert [e.event.seq for e in box.events()] == list(range(4, 11))
    assert box.prune_delivered(older_than_ns=0) == 0  # delivered too recently
    assert box.checkpoint()[0] == 4
    assert box.verify(keys) == 7
    box.close()

    reopened = open_box(tmp_path / "o.db", signer)
    nxt = tap(reopened)
    assert nxt.event.seq == 11
    assert reopened.verify(keys) == 8
    reopened.close()


def test_autoincrement_never_reissues_a_seq_after_everything_is_pruned(
    tmp_path: Path, signer: Ed25519Signer, keys
) -> None:
    box = open_box(tmp_path / "o.db", signer)
    last = [tap(box) for _ in range(3)][-1]
    box.mark_delivered([1, 2, 3])
    assert box.prune_delivered(older_than_ns=2**62) == 3
    assert list(box.events()) == []
    box.close()
    box = open_box(tmp_path / "o.db", signer)
    nxt = tap(box)
    assert nxt.event.seq == 4
    assert nxt.event.prev_hash == last.digest  # the chain continues across the prune
    assert box.verify(keys) == 1
    box.close()


def test_chain_verification_catches_tampering(tmp_path: Path, signer, keys) -> None:
    box = open_box(tmp_path / "o.db", signer)
    for _ in range(3):
        tap(box)
    box.close()
    with sqlite3.connect(tmp_path / "o.db") as db:
        db.execute("DELETE FROM events WHERE seq = 2")
    box = open_box(tmp_path / "o.db", signer)
    with pytest.raises(ChainBroken):
        box.verify(keys)
    box.close()


def test_verdicts_are_shown_once_newest_first(fresh_box: Outbox) -> None:
    tap(fresh_box, badge="sim:0A")
    tap(fresh_box, badge="sim:0B")
    tap(fresh_box, badge="sim:0A", kind=Kind.OUT)
    assert fresh_box.last_verdict_for("sim:0A") is None
    fresh_box.record_verdict(1, Outcome.REGISTERED, "")
    fresh_box.record_verdict(3, Outcome.REJECTED, "dimona not ok")
    fresh_box.record_verdict(2, Outcome.REGISTERED, "")
    assert fresh_box.last_verdict_for("sim:0A") == Verdict(3, Outcome.REJECTED, "dimona not ok")
    assert fresh_box.last_verdict_for("sim:0A") is None
    assert fresh_box.last_verdict_for("sim:0B") == Verdict(2, Outcome.REGISTERED, "")


def test_worker_states_survive_reopen_and_belong_to_the_workplace(
    tmp_path: Path, signer
) -> None:
    box = open_box(tmp_path / "o.db", signer)
    tap(box, badge="sim:0A", kind=Kind.IN, wall_ns=10, state_key="w-a")
    tap(box, badge="sim:0A", kind=Kind.BREAK_START, wall_ns=20, state_key="w-a")
    tap(box, badge="sim:0B", kind=Kind.IN, wall_ns=30, state_key="w-b")
    tap(box, badge="sim:0B", kind=Kind.IN, wall_ns=40, flags=["selftest"])  # moves nobody
    box.close()
    box = open_box(tmp_path / "o.db", signer)
    assert box.worker_states() == {"w-a": (Kind.BREAK_START, 20), "w-b": (Kind.IN, 30)}
    box.close()
    # The same file after a rebind: the old site's states are not the new site's.
    rebound = Outbox(tmp_path / "o.db", signer=signer, terminal_id=TID, workplace="ZZZZZZZZ12345")
    assert rebound.worker_states() == {}
    rebound.close()


def test_corrupt_file_raises_and_is_left_untouched(tmp_path: Path, signer) -> None:
    path = tmp_path / "o.db"
    box = open_box(path, signer)
    for _ in range(50):
        tap(box, badge="sim:" + "AB" * 20)
    box.close()
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + 64] = b"\xff" * 64  # trash the events table's b-tree page header
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupt, match="left as it is"):
        open_box(path, signer)
    assert path.read_bytes() == bytes(data)
    assert not (tmp_path / "o.db-wal").exists() or (tmp_path / "o.db-wal").stat().st_size == 0


def test_not_a_database_raises_outbox_corrupt(tmp_path: Path, signer) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite" * 400)
    with pytest.raises(OutboxCorrupt):
        open_box(path, signer)
    assert path.read_bytes() == b"this is not sqlite" * 400


def test_disk_full_refuses_keeps_rows_and_recovers(tmp_path: Path, signer, keys) -> None:
    box = open_box(tmp_path / "o.db", signer)
    kept = [tap(box).event.seq for _ in range(3)]
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")
    refusal = None
    for _ in range(200):
        try:
            tap(box, badge="sim:" + "CD" * 20)
        except OutboxFull as exc:
            refusal = exc
            break
    assert isinstance(refusal, OSError)
    held = [e.event.seq for e in box.events()]
    assert held[:3] == kept
    assert held == list(range(1, len(held) + 1))
    assert box.stats().depth == len(held)
    box._db.execute(f"PRAGMA max_page_count = {pages * 100}")
    after = tap(box)
    assert after.event.seq == len(held) + 1
    assert box.verify(keys) == len(held) + 1
    box.close()


def test_threads_share_the_outbox_without_gaps(fresh_box: Outbox, keys) -> None:
    def writer() -> None:
        for _ in range(25):
            tap(fresh_box)

    def acker() -> None:
        for _ in range(25):
            fresh_box.mark_delivered(s.event.seq for s in fresh_box.unsent(limit=5))

    threads = [threading.Thread(target=f) for f in (writer, writer, acker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh_box.stats().last_seq == 50
    assert fresh_box.verify(keys) == 50


def test_verify_cli_reports_ok_and_broken(tmp_path: Path, signer, capsys) -> None:
    box = open_box(tmp_path / "o.db", signer)
    for _ in range(4):
        tap(box)
    box.close()
    keyfile = tmp_path / "pub.hex"
    keyfile.write_text(signer.public_key_bytes().hex() + "\n")
    assert verify_cli(["--db", str(tmp_path / "o.db"), "--public-key", str(keyfile)]) == 0
    assert "OK" in capsys.readouterr().out
    keyfile.write_text(Ed25519Signer.generate().public_key_bytes().hex())
    assert verify_cli(["--db", str(tmp_path / "o.db"), "--public-key", str(keyfile)]) == 1
    assert "BROKEN" in capsys.readouterr().out
    assert verify_cli(["--db", str(tmp_path / "none.db"), "--public-key", str(keyfile)]) == 2


def test_heartbeat_and_uplink_queries_use_indexes_not_scans(fresh_box: Outbox) -> None:
    """stats() and unsent() must stay cheap at a million rows: no full-table scan in any plan."""
    db = fresh_box._db
    queries = [
        "SELECT wall_ns FROM events WHERE state = 'pending' ORDER BY seq LIMIT 1",
        "SELECT seq FROM events WHERE state = 'pending' AND seq > 5 ORDER BY seq LIMIT 500",
        "SELECT seq FROM events WHERE badge = 'sim:0A' AND verdict IS NOT NULL "
        "AND verdict_shown = 0 ORDER BY seq DESC LIMIT 1",
    ]
    for query in queries:
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + query))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (query, plan)
        assert "TEMP B-TREE" not in plan, (query, plan)


def test_wait_until_wakes_on_the_ack_itself(fresh_box: Outbox) -> None:
    tap(fresh_box)
    tap(fresh_box)
    empty = threading.Event()
    returned: list[bool] = []
    acked_up_to_1 = threading.Event()

    def waiter() -> None:
        returned.append(fresh_box.wait_until(lambda: fresh_box.stats().depth == 0, 60.0))
        empty.set()

    def first_acked() -> bool:
        done = not any(e.event.seq == 1 for e in fresh_box.unsent(limit=1))
        if done:
            acked_up_to_1.set()
        return done

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    helper = threading.Thread(target=lambda: fresh_box.wait_until(first_acked, 60.0), daemon=True)
    helper.start()
    fresh_box.mark_delivered([1])
    # Woken by the commit, not by a timeout: the helper returns long before its 60 s.
    assert acked_up_to_1.wait(10.0)
    assert not empty.is_set()  # seq 2 is still pending: the other waiter keeps waiting
    fresh_box.mark_delivered([2])
    assert empty.wait(10.0)
    assert returned == [True]
    thread.join(1.0)
    helper.join(1.0)


def test_wait_until_says_false_when_nothing_is_acked_in_time(fresh_box: Outbox) -> None:
    tap(fresh_box)
    assert not fresh_box.wait_until(lambda: fresh_box.stats().depth == 0, 0.05)
    assert fresh_box.stats().depth == 1
