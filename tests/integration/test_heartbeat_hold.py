"""Heartbeats of many terminals arriving together, through a real Mosquitto into a real intake
on a SQLite file: each ends up in its own health row, written in a few transactions, and the
rows are there after a restart. A heartbeat the intake holds (checked, not yet written) is not
PUBACKed: a gateway that dies holding it gets it again from the broker when it comes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.intake import Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Channel, encode_status, topic
from tests.support.mosquitto import MosquittoBroker, gateway_config, running_broker
from tests.support.raw_client import Flooder
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

WORKPLACE = "1Y1003SQ5VSSZ"
IDS = [f"t-many-{i:02d}" for i in range(30)]


@contextmanager
def gateway_parts(path: Path) -> Iterator[tuple[SQLiteGatewayDB, TerminalRegistry, Inbox]]:
    db = SQLiteGatewayDB(path)  # the registry's and the health's connection, as in the gateway
    try:
        yield db, TerminalRegistry(db), Inbox(path)
    finally:
        db.close()


def register_all(registry: TerminalRegistry) -> None:
    for terminal in IDS:
        key = Ed25519Signer.generate().public_key_bytes()
        registry.register(terminal, WORKPLACE, public_key=key)


def send_heartbeats(broker: MosquittoBroker, depth: int) -> None:
    """Each terminal publishes one heartbeat (``queue_depth`` = depth + its index), all
    connected first so they arrive together."""
    links = [Flooder(broker, t, t) for t in IDS]
    try:
        for i, (terminal, link) in enumerate(zip(IDS, links, strict=True)):
            status = {"state": "online", "queue_depth": depth + i, "heartbeat_s": 30}
            link.client.publish(topic(terminal, Channel.STATUS), encode_status(status), qos=1)
        assert wait_until(lambda: all(link.acked for link in links), timeout=30)
    finally:
        for link in links:
            link.close()


def depths(db: SQLiteGatewayDB) -> dict[str, int | None]:
    rows = {t: db.terminal_health(t) for t in IDS}
    return {t: None if r is None or not r["online"] else r["queue_depth"] for t, r in rows.items()}


def test_many_terminals_heartbeats_each_get_their_row_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.db"
    with running_broker(tmp_path / "broker", terminals=IDS) as broker:
        with gateway_parts(path) as (db, registry, inbox):
            register_all(registry)
            intake = Intake(gateway_config(broker), inbox=inbox, registry=registry,
                            health=TerminalHealth(db))  # fmt: skip
            intake.start()
            try:
                send_heartbeats(broker, 100)
                expected = {t: 100 + i for i, t in enumerate(IDS)}
                assert wait_until(lambda: depths(db) == expected, timeout=30), depths(db)
                assert intake.stats["heartbeats"] == len(IDS)
            finally:
                intake.stop()
        with gateway_parts(path) as (db, _, _):  # the gateway restarted: its rows are there
            assert depths(db) == expected


def test_heartbeats_held_by_a_gateway_that_dies_come_again_from_the_broker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.db"
    with running_broker(tmp_path / "broker", terminals=IDS, persistence=True) as broker:
        cfg = gateway_config(broker)
        with gateway_parts(path) as (db, registry, inbox):
            register_all(registry)
            dying = Intake(cfg, inbox=inbox, registry=registry, health=TerminalHealth(db))
            held = dying.heartbeats
            held.hold_max, held.hold_s, held.idle_s = 10**6, 10**6, 10**6  # never written
            dying.start()
            try:
                send_heartbeats(broker, 200)
                assert wait_until(lambda: len(dying.heartbeats) == len(IDS), timeout=30)
                assert set(depths(db).values()) == {None}  # held, not written
                dying.link.stop()  # the gateway dies: its connection gone, nothing PUBACKed
            finally:
                dying._stopping.set()  # its worker ends without writing them
                dying.heartbeats.flush = lambda: 0  # type: ignore[method-assign]
                dying.stop()

            back = Intake(cfg, inbox=inbox, registry=registry, health=TerminalHealth(db))
            back.start()  # the same persistent session: the broker delivers them again
            try:
                expected = {t: 200 + i for i, t in enumerate(IDS)}
                assert wait_until(lambda: depths(db) == expected, timeout=30), depths(db)
            finally:
                back.stop()
