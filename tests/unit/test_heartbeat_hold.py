"""The intake's worker holds checked heartbeats and writes them together: not before
``hold_max`` wait or the oldest has waited ``hold_s`` (an injected clock here), and, where the
events and the heartbeats share one database connection (PostgreSQL's pool, or one SQLite
connection), in the same transaction as a group of events stored meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.intake import Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.protocol import Channel, encode_batch, encode_status, topic
from tests.support.clock import ManualClock
from tests.support.inbox import TerminalFeed
from tests.support.transactions import count_transactions

WORKPLACE = "1Y1003SQ5VSSZ"
IDS = [f"t-hold-{i:02d}" for i in range(6)]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Intake, ManualClock, SQLiteGatewayDB, TerminalFeed]]:
    db = SQLiteGatewayDB(tmp_path / "gateway.db")  # one connection for every part
    registry = TerminalRegistry(db)
    feed = TerminalFeed(IDS[0], WORKPLACE)
    registry.register(IDS[0], WORKPLACE, public_key=feed.signer.public_key_bytes())
    for terminal_id in IDS[1:]:
        registry.register(terminal_id, WORKPLACE, public_key=TerminalFeed(terminal_id,
                          WORKPLACE).signer.public_key_bytes())  # fmt: skip
    clock = ManualClock()
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry, clock=clock,
                    health=TerminalHealth(db))  # fmt: skip
    try:
        yield intake, clock, db, feed
    finally:
        intake.signatures.shutdown()
        db.close()


def beats(depth: int) -> list[tuple[str, bytes]]:
    return [
        (topic(t, Channel.STATUS), encode_status({"state": "online", "queue_depth": depth + i}))
        for i, t in enumerate(IDS)
    ]


def health_depths(db: SQLiteGatewayDB) -> dict[str, int | None]:
    rows = {t: db.terminal_health(t) for t in IDS}
    return {t: (row["queue_depth"] if row is not None else None) for t, row in rows.items()}


def test_held_heartbeats_wait_for_their_window_then_each_gets_its_health_row(parts) -> None:  # type: ignore[no-untyped-def]
    intake, clock, db, _ = parts
    results = intake.handle_many(beats(10), hold_heartbeats=True)

    assert all(r.heartbeat for r in results)
    assert len(intake.heartbeats) == len(IDS)
    assert set(health_depths(db).values()) == {None}  # held: nothing written yet
    clock.now += intake.heartbeats.hold_s / 2
    intake.handle_many([], hold_heartbeats=True)
    assert len(intake.heartbeats) == len(IDS)

    clock.now += intake.heartbeats.hold_s / 2
    intake.handle_many([], hold_heartbeats=True)  # the worker's idle turn

    assert len(intake.heartbeats) == 0
    assert health_depths(db) == {t: 10 + i for i, t in enumerate(IDS)}
    assert intake.stats["heartbeats"] == len(IDS)


def test_enough_held_heartbeats_are_written_without_waiting(parts) -> None:  # type: ignore[no-untyped-def]
    intake, _, db, _ = parts
    intake.heartbeats.hold_max = 2 * len(IDS)
    intake.handle_many(beats(0), hold_heartbeats=True)
    assert len(intake.heartbeats) == len(IDS)

    intake.handle_many(beats(20), hold_heartbeats=True)

    assert len(intake.heartbeats) == 0
    assert health_depths(db) == {t: 20 + i for i, t in enumerate(IDS)}  # the later ones won


def test_held_heartbeats_join_the_transaction_of_the_events_stored(
    parts,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, _, db, feed = parts
    intake.handle_many(beats(5), hold_heartbeats=True)
    transactions = count_transactions(monkeypatch, db)
    signed = feed.event("in", "nfc-a:04A1B2C3", time.time_ns())
    [handled] = intake.handle_many(
        [(topic(feed.terminal_id, Channel.EVENTS), encode_batch([signed]))], hold_heartbeats=True
    )

    assert handled.ack_seqs == [1]
    assert len(transactions) == 1  # the event and the six heartbeats: one commit
    assert len(intake.heartbeats) == 0
    assert health_depths(db) == {t: 5 + i for i, t in enumerate(IDS)}


def test_the_worker_waits_for_messages_no_longer_than_a_quiet_moment_while_holding(parts) -> None:  # type: ignore[no-untyped-def]
    """With heartbeats held the worker's wait is short (then it writes them): a broker whose
    in-flight window is smaller than hold_max stops sending until PUBACKs come, and would
    otherwise stall the intake for the whole hold."""
    intake, clock, _, _ = parts
    held = intake.heartbeats
    assert held.wait_s(0.2) == 0.2  # nothing held: the worker's usual wait
    intake.handle_many(beats(0), hold_heartbeats=True)

    assert held.wait_s(0.2) == held.idle_s < held.hold_s
    clock.now += held.hold_s - held.idle_s / 2
    assert held.wait_s(0.2) == pytest.approx(held.idle_s / 2)
    clock.now += held.idle_s
    assert held.wait_s(0.2) == 0.0
