"""Heartbeats taken in one intake group are recorded in one transaction: all of them, or, when
the database fails, none (the PUBACKs are withheld and the broker delivers them again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.db import OperationalError
from siteclock.gateway.intake import Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Channel, encode_status, topic
from tests.support.transactions import count_transactions

WORKPLACE = "1Y1003SQ5VSSZ"
IDS = [f"t-beat-{i:02d}" for i in range(5)]


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    db = tmp_path / "gateway.db"
    registry = TerminalRegistry(db)
    for terminal_id in IDS:
        registry.register(
            terminal_id, WORKPLACE, public_key=Ed25519Signer.generate().public_key_bytes()
        )
    return Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected


def beats(n: int) -> list[tuple[str, bytes]]:
    return [
        (topic(t, Channel.STATUS), encode_status({"state": "online", "queue_depth": n}))
        for t in IDS
    ]


def test_a_groups_heartbeats_are_committed_together(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = count_transactions(monkeypatch, intake.registry.db)
    intake.handle_many(beats(1))

    assert len(transactions) == 1
    assert intake.stats["heartbeats"] == len(IDS)
    assert all(intake.registry.last_heartbeat(t) == {"state": "online", "queue_depth": 1}
               for t in IDS)  # fmt: skip


def test_a_failing_database_records_none_and_keeps_them_for_the_next_group(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_record = intake.registry.db.record_heartbeats

    def failing_on_the_third(beats: list) -> None:  # type: ignore[type-arg]
        real_record(beats[:2])  # two written, then the disk fails
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(intake.registry.db, "record_heartbeats", failing_on_the_third)
    with pytest.raises(OperationalError):
        intake.handle_many(beats(1))
    assert all(intake.registry.last_heartbeat(t) is None for t in IDS)  # rolled back, all
    assert intake.stats["heartbeats"] == 0

    monkeypatch.undo()
    intake.handle_many([])  # the next group records what the failed one held
    assert all(intake.registry.last_heartbeat(t) is not None for t in IDS)
    assert intake.stats["heartbeats"] == len(IDS)
