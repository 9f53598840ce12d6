"""The alert rules on a real gateway database: each alert raised once while its condition lasts,
resolved (with the time) when it clears, event alerts raised once ever and resolved by a person,
a security alert's own row marked resolved with them, decommissioned terminals' alerts closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.alerts.rules import AlertRules, resolve_by_person
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.terminal_health import HealthConfig, TerminalHealth
from siteclock.gateway.terminals import DISABLED, TerminalRegistry
from tests.contract.test_gateway_db import SITE, T, event
from tests.unit.test_terminal_health import Clock, heartbeat

S = 10**9


@pytest.fixture
def world(tmp_path: Path):
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    clock = Clock()
    registry = TerminalRegistry(db)
    registry.register(T, SITE, public_key=b"\x01" * 32)
    health = TerminalHealth(db, HealthConfig(heartbeat_s=5, margin_s=1), clock_ns=clock)
    cfg = AlertConfig(console_url="https://console.example:8443/", backlog_age_s=120)
    rules = AlertRules(db, cfg, clock_ns=clock)
    yield db, clock, registry, health, rules
    db.close()


def open_alerts(db) -> dict[str, str]:
    return {r["key"]: r["message"] for r in db.alerts_list()}


def test_a_terminal_condition_is_one_alert_while_it_lasts_and_resolves_when_it_clears(world):
    db, clock, _, health, rules = world
    health.on_status(T, heartbeat())
    assert rules.evaluate().raised == []  # all well: nothing
    clock.advance(10)
    health.sweep()
    first = rules.evaluate()
    assert first.raised == [f"terminal_offline:{T}"]
    assert rules.evaluate().raised == []  # still offline: still the one alert
    row = db.alerts_list()[0]
    assert row["link"] == f"https://console.example:8443/terminals/{T}"
    assert "offline since" in row["message"]
    assert "silent" in row["message"]
    clock.advance(1)
    health.on_status(T, heartbeat())
    assert rules.evaluate().resolved == [f"terminal_offline:{T}"]
    done = db.alerts_list(open_only=False)[0]
    assert done["resolution"].startswith("back online at ")
    clock.advance(10)
    health.sweep()
    assert rules.evaluate().raised == [f"terminal_offline:{T}"]  # a new episode, a new alert
    assert db.count_alerts(open_only=False) == 2


def test_backlog_clock_reader_and_disk_raise_each_their_alert(world):
    db, _, _, health, rules = world
    health.on_status(T, heartbeat(
        oldest_unsent_age_s=600.0, queue_depth=40,
        clock={"synced": False, "maxerror_us": 16_000_000, "source": "adjtimex"},
        reader="fault: no answer from PN532; check the cable", disk_free_mb=20.0,
    ))  # fmt: skip
    raised = rules.evaluate().raised
    assert sorted(raised) == sorted(
        f"{k}:{T}" for k in ("backlog", "clock_unsynced", "reader_fault", "disk_low")
    )
    messages = open_alerts(db)
    assert "40 unsent events, the oldest 10 min old" in messages[f"backlog:{T}"]
    assert "check the cable" in messages[f"reader_fault:{T}"]
    health.on_status(T, heartbeat())
    assert sorted(rules.evaluate().resolved) == sorted(raised)


def test_a_decommissioned_terminal_leaves_the_list_and_its_alerts_close(world):
    db, clock, registry, health, rules = world
    health.on_status(T, heartbeat())
    clock.advance(10)
    health.sweep()
    rules.evaluate()
    registry.set_status(T, DISABLED)
    assert rules.evaluate().resolved == [f"terminal_offline:{T}"]
    assert "decommissioned" in db.alerts_list(open_only=False)[0]["resolution"]
    assert db.terminals_page() == []


def test_relay_alerts_follow_the_relay_and_credentials_are_their_own_kind(world):
    db, clock, _, _, rules = world
    db.raise_relay_alert("credentials", "credentials refused by the token endpoint", clock.ns)
    db.raise_relay_alert("unreachable", "CIaO unreachable since ...", clock.ns)
    assert sorted(rules.evaluate().raised) == ["nsso_auth:credentials", "relay:unreachable"]
    db.clear_relay_alert("credentials", clock.ns + 5)
    assert rules.evaluate().resolved == ["nsso_auth:credentials"]


def test_rejections_remarks_and_sequence_issues_are_raised_once_ever(world):
    db, clock, _, _, rules = world
    db.store_events([event(n, received_ns=clock.ns) for n in (1, 2, 3)])
    db.take_new_events(clock.ns, full=True)
    db.set_registrations([
        ((T, 1), {"state": "rejected", "remarks": ["Dimona not OK"], "updated_ns": clock.ns}),
        ((T, 2), {"state": "registered", "remarks": ["late registration"],
                  "updated_ns": clock.ns}),
    ])  # fmt: skip
    db.record_decisions([(T, 3, SITE, "w-1", 100, "in", "out", "forgotten_out", clock.ns)])
    raised = rules.evaluate().raised
    assert sorted(raised) == [f"nsso_rejected:{T}:1", f"nsso_remark:{T}:2", f"sequence:{T}:3"]
    messages = open_alerts(db)
    assert "Dimona not OK" in messages[f"nsso_rejected:{T}:1"]
    assert "forgotten out" in messages[f"sequence:{T}:3"]
    assert "w-1" not in messages[f"sequence:{T}:3"]  # no worker reference in an alert
    # a person resolves the remark; the rules never raise it again
    remark = next(r for r in db.alerts_list() if r["kind"] == "nsso_remark")
    assert resolve_by_person(db, remark["id"], "noted, late tap explained", "admin@site")
    clock.advance(1)
    db.set_registrations([((T, 2), {"updated_ns": clock.ns})])
    assert rules.evaluate().raised == []
    # requeued after a fix: the rejection resolves itself
    db.set_registrations([((T, 1), {"state": "queued", "updated_ns": clock.ns})])
    assert rules.evaluate().resolved == [f"nsso_rejected:{T}:1"]


def test_a_security_alert_resolved_in_the_console_is_marked_resolved_in_its_table(world):
    db, clock, _, _, rules = world
    db.record_security_alert(T, 7, "seq_conflict", "same seq, other hash", at_ns=clock.ns)
    assert rules.evaluate().raised == [f"security:{db.open_security_alerts()[0]['id']}"]
    alert = db.alerts_list()[0]
    assert alert["kind"] == "security"
    assert resolve_by_person(db, alert["id"], "terminal replaced", "admin@site")
    assert db.open_security_alerts() == []
    assert resolve_by_person(db, alert["id"], "again", "admin@site") is False
    assert rules.evaluate().raised == []


def test_events_waiting_at_the_gateway_too_long_are_one_alert_until_they_move(world):
    db, clock, _, _, rules = world
    db.store_events([event(n, received_ns=clock.ns) for n in (1, 2, 3)])
    db.take_new_events(clock.ns, full=True)
    db.set_registrations([((T, 1), {"state": "unknown_badge"}), ((T, 3), {"state": "registered"})])
    assert rules.evaluate().raised == []  # waiting, but not for long yet
    clock.advance(121)
    assert rules.evaluate().raised == ["relay_backlog:gateway"]
    message = open_alerts(db)["relay_backlog:gateway"]
    assert "2 registrations wait at the gateway" in message
    assert "queued: 1, unknown badge: 1" in message
    assert rules.evaluate().raised == []  # still one alert
    db.set_registrations([((T, 1), {"state": "registered"}), ((T, 2), {"state": "pending"})])
    assert rules.evaluate().resolved == ["relay_backlog:gateway"]


def test_a_state_alert_a_person_resolved_comes_back_only_after_its_condition_cleared(world):
    db, clock, _, health, rules = world
    health.on_status(T, heartbeat())
    clock.advance(10)
    health.sweep()
    rules.evaluate()
    (alert,) = db.alerts_list(kinds=["terminal_offline"])
    assert resolve_by_person(db, alert["id"], "unplugged for painting, back Monday", "admin@x")
    for _ in range(3):  # still offline: the person knows, no new alert
        clock.advance(5)
        assert rules.evaluate().raised == []
    health.on_status(T, heartbeat())
    rules.evaluate()  # online again: the condition cleared
    clock.advance(10)
    health.sweep()
    assert rules.evaluate().raised == [f"terminal_offline:{T}"]  # a new episode raises again
    assert db.count_alerts(open_only=False, kinds=["terminal_offline"]) == 2
