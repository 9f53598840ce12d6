"""The terminal-health operations on every backend: a heartbeat recorded twice (the upsert),
then the terminal offline, then back (each change reported once)."""

from __future__ import annotations

from siteclock.gateway.db import GatewayDB
from tests.contract.test_gateway_db import T

FIGURES = {"heartbeat_s": 30.0, "queue_depth": 2, "reader": "ok", "alerts": ""}


def test_online_twice_then_offline_then_back(db: GatewayDB) -> None:
    assert db.save_terminal_online(T, 10, 40, FIGURES) is True  # never seen: it came online
    assert db.save_terminal_online(T, 20, 50, FIGURES) is False  # still online: no change
    row = db.terminal_health(T)
    assert row is not None
    assert row["online"] == 1
    assert row["changed_ns"] == 10
    assert row["heartbeat_ns"] == 20
    assert db.save_terminal_offline(T, 30, "connection lost") is True
    assert db.save_terminal_offline(T, 35, "connection lost") is False
    assert db.save_terminal_online(T, 40, 70, FIGURES) is True
    assert db.terminal_health(T)["changed_ns"] == 40


def test_many_heartbeats_in_one_write_each_reach_their_terminal(db: GatewayDB) -> None:
    others = [f"{T}-b", f"{T}-c"]
    db.save_terminal_online(T, 5, 35, FIGURES)  # online already
    db.save_terminal_offline(others[0], 6, "connection lost")  # offline
    came_back = db.save_terminals_online([
        (T, 10, 40, FIGURES),
        (others[0], 11, 41, {**FIGURES, "queue_depth": 7}),
        (others[1], 12, 42, FIGURES),  # never seen
        (others[1], 13, 43, {**FIGURES, "queue_depth": 9}),  # its later heartbeat wins
    ])  # fmt: skip

    assert came_back == others
    rows = {t: db.terminal_health(t) for t in (T, *others)}
    assert {t: (r["online"], r["heartbeat_ns"], r["queue_depth"]) for t, r in rows.items()} == {
        T: (1, 10, 2), others[0]: (1, 11, 7), others[1]: (1, 13, 9)
    }  # fmt: skip
    assert rows[T]["changed_ns"] == 5  # still online since its first heartbeat
