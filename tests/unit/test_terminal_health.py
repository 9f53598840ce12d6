"""Terminal health: online from heartbeats, offline from the Last Will or from silence (decided
by the sweeper on an injected clock), figures kept, refusals counted per terminal, transitions
and reader faults logged, a decommissioned terminal out of the list."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.terminal_health import SILENT, HealthConfig, TerminalHealth
from siteclock.gateway.terminals import DISABLED, TerminalRegistry

SITE = "1Y1003SQ5VSSZ"
S = 10**9


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * S)


def heartbeat(**extra: object) -> dict:
    status = {
        "state": "online", "queue_depth": 3, "oldest_unsent_age_s": 12.5,
        "clock": {"synced": True, "maxerror_us": 1200, "source": "adjtimex"},
        "reader": "ok", "disk_free_mb": 900.0, "version": "0.1.0", "alerts": [],
        "wall_ns": 1_700_000_000 * S + 250_000_000, "heartbeat_s": 5.0,
    }  # fmt: skip
    return {**status, **extra}


@pytest.fixture
def world(tmp_path: Path):
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    clock = Clock()
    registry = TerminalRegistry(db)
    for i in range(3):
        registry.register(f"t-{i:02d}", SITE, public_key=bytes([i + 1]) * 32)
    health = TerminalHealth(db, HealthConfig(heartbeat_s=30, margin_s=2), clock_ns=clock)
    yield db, clock, registry, health
    db.close()


def test_a_heartbeat_keeps_its_figures_and_the_clock_offset(world) -> None:
    db, _, _, health = world
    health.on_status("t-00", heartbeat())
    row = db.terminal_health("t-00")
    assert row["online"] == 1
    assert (row["queue_depth"], row["oldest_unsent_age_s"], row["disk_free_mb"]) == (3, 12.5, 900)
    assert (row["clock_synced"], row["clock_maxerror_us"], row["clock_offset_ms"]) == (1, 1200, 250)
    assert (row["reader"], row["version"], row["heartbeat_s"]) == ("ok", "0.1.0", 5.0)


def test_a_silent_terminal_turns_offline_within_its_interval_plus_the_margin(world) -> None:
    db, clock, _, health = world
    health.on_status("t-00", heartbeat(heartbeat_s=5.0))
    health.on_status("t-01", heartbeat(heartbeat_s=None))  # reports none: the config's 30 s
    clock.advance(6.9)  # 5 s + 2 s margin not yet passed
    assert health.sweep() == []
    clock.advance(0.2)
    assert health.sweep() == ["t-00"]
    row = db.terminal_health("t-00")
    assert (row["online"], row["reason"]) == (0, SILENT)
    assert row["queue_depth"] == 3  # the last figures stay for the page
    clock.advance(30 + 2 - 7.1 + 0.1)
    assert health.sweep() == ["t-01"]


def test_the_last_will_turns_it_offline_at_once_and_a_heartbeat_back_online(world) -> None:
    db, clock, _, health = world
    health.on_status("t-00", heartbeat())
    clock.advance(1)
    health.on_status("t-00", {"state": "offline", "reason": "connection lost"})
    row = db.terminal_health("t-00")
    assert (row["online"], row["reason"], row["changed_ns"]) == (0, "connection lost", clock.ns)
    assert health.sweep() == []  # offline already: the sweeper does not touch it
    clock.advance(1)
    health.on_status("t-00", heartbeat())
    row = db.terminal_health("t-00")
    assert (row["online"], row["reason"], row["changed_ns"]) == (1, "", clock.ns)


def test_going_offline_coming_back_and_reader_faults_are_logged(world, caplog) -> None:
    _, clock, _, health = world
    caplog.set_level(logging.INFO)
    health.on_status("t-00", heartbeat())
    health.on_status("t-00", heartbeat(reader="fault: no answer from PN532; check the cable"))
    health.on_status("t-00", heartbeat(reader="fault: no answer from PN532; check the cable"))
    health.on_status("t-00", heartbeat())
    clock.advance(60)
    health.sweep()
    messages = [(r.getMessage(), r.levelno) for r in caplog.records]
    assert ("terminal online", logging.INFO) in messages
    assert [m for m in messages if m[0] == "reader fault"] == [("reader fault", logging.ERROR)]
    assert ("reader recovered", logging.WARNING) in messages
    assert any(m.startswith("terminal offline") for m, _ in messages)


def test_hostile_figures_are_dropped_not_stored(world) -> None:
    db, _, _, health = world
    health.on_status("t-00", heartbeat(
        queue_depth="lots", disk_free_mb=True, clock="not a map", heartbeat_s=10**9,
        version="v" * 500, alerts=["disk_low", 7, {"x": 1}],
    ))  # fmt: skip
    row = db.terminal_health("t-00")
    assert row["queue_depth"] is None
    assert row["disk_free_mb"] is None
    assert row["clock_synced"] is None
    assert row["heartbeat_s"] == 30.0  # out of range: the configured interval
    assert len(row["version"]) == 40
    assert row["alerts"] == "disk_low"


def test_refusals_are_counted_per_terminal_and_reason_on_the_sweep(world) -> None:
    db, _, _, health = world
    for _ in range(3):
        health.on_refusal("t-00", "bad_signature")
    health.on_refusal("t-01", "wrong_workplace")
    health.on_refusal(None, "bad_topic")  # no terminal: counted by the intake only
    health.on_refusal("t-made-up", "unknown_terminal")  # not one of ours: no row for it
    assert db.terminal_refusals(["t-00"]) == {}
    health.sweep()
    health.on_refusal("t-00", "bad_signature")
    health.sweep()
    assert db.terminal_refusals(["t-00", "t-01"]) == {
        "t-00": {"bad_signature": 4}, "t-01": {"wrong_workplace": 1},
    }  # fmt: skip
    assert db.refusal_totals() == {"bad_signature": 4, "wrong_workplace": 1}


def test_the_page_lists_offline_first_and_a_decommissioned_terminal_leaves_it(world) -> None:
    db, _clock, registry, health = world
    for t in ("t-00", "t-01"):
        health.on_status(t, heartbeat())
    health.on_status("t-01", {"state": "offline", "reason": "stopped"})
    page = db.terminals_page()
    assert [r["terminal"] for r in page] == ["t-01", "t-02", "t-00"]  # offline or never, online
    assert db.terminals_summary() == {"online": 1, "offline": 1, "never": 1}
    registry.set_status("t-00", DISABLED)  # decommissioned while running
    assert [r["terminal"] for r in db.terminals_page()] == ["t-01", "t-02"]
    assert [r["terminal"] for r in db.terminals_page(state="offline")] == ["t-01"]
    assert db.terminals_page(workplaces=[]) == []
    assert len(db.terminals_page(limit=1, offset=1)) == 1


def test_the_gateway_config_reads_health_and_alerts_and_names_a_bad_value(tmp_path: Path):
    from siteclock.config import ConfigError, load
    from siteclock.gateway.config import GatewayConfig

    base = f'db = "{tmp_path}/g.db"\nsigning_key_file = "{tmp_path}/k"\n'
    good = tmp_path / "good.toml"
    good.write_text(base + "[health]\nheartbeat_s = 5\nmargin_s = 2\n"
                    '[alerts]\nurls_file = "/etc/siteclock/alert-urls"\nbacklog_age_s = 120\n')
    cfg = load(good, GatewayConfig)
    assert (cfg.health.heartbeat_s, cfg.health.margin_s, cfg.health.sweep_s) == (5.0, 2.0, 1.0)
    assert cfg.alerts.urls_file == Path("/etc/siteclock/alert-urls")
    assert cfg.alerts.backlog_age_s == 120.0
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[health]\nheartbeat_s = 0\n")
    with pytest.raises(ConfigError, match="health"):
        load(bad, GatewayConfig)


def test_a_restarted_gateway_judges_no_one_silent_before_an_interval_has_passed(world):
    db, clock, _, health = world
    health.on_status("t-00", heartbeat(heartbeat_s=5.0))
    clock.advance(3600)  # the gateway was down for an hour; the row still says online
    restarted = TerminalHealth(db, HealthConfig(heartbeat_s=30, margin_s=2), clock_ns=clock)
    assert restarted.sweep() == []  # its retained status is on its way
    clock.advance(6.9)  # its own interval (5 s) plus the margin not yet passed
    assert restarted.sweep() == []
    clock.advance(0.2)
    assert restarted.sweep() == ["t-00"]  # nothing came: silent indeed
