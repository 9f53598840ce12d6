"""A real ``siteclock terminal`` process on a real broker, watched by a real gateway:

* killed, it is offline at once (the broker publishes its Last Will when the socket closes);
* frozen with its connection open (a hung terminal, a network that died silently), the gateway
  turns it offline from silence within its heartbeat interval plus the margin, long before the
  broker would give up on the connection (1.5 keepalives);

each time one alert is raised and sent through Apprise to a real local webhook, and when the
terminal runs again it is online, the alert resolved and the resolution sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.files import write_secret
from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminal_health import SILENT, HealthConfig
from siteclock.gateway.terminals import TerminalRegistry
from tests.integration.test_alert_delivery import Hook
from tests.support.live_terminal import WORKPLACE, LiveTerminal
from tests.support.mosquitto import gateway_config, running_broker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TID = "t-live-01"
HEARTBEAT_S = 1.0
HEALTH = HealthConfig(heartbeat_s=30.0, margin_s=1.0, sweep_s=0.2)
STATED_S = HEARTBEAT_S + HEALTH.margin_s + HEALTH.sweep_s
"""The stated time: a silent terminal is offline at most this long after its last heartbeat."""
SLACK_S = 0.5
"""For the gateway's own scheduling on a loaded machine (two cores, eight agents)."""


def online(db: SQLiteGatewayDB) -> bool:
    row = db.terminal_health(TID)
    return row is not None and row["online"] == 1


def offline_row(db: SQLiteGatewayDB):  # type: ignore[no-untyped-def]
    row = db.terminal_health(TID)
    return row if row is not None and row["online"] == 0 else None


OFFLINE = ["terminal_offline"]


def offline_news(hook: Hook) -> list[str]:
    """Titles the webhook got about going offline (this machine's clock may be unsynced: the
    terminal then has its own clock alert, which is right and not this test's business)."""
    return [m["title"] for m in hook.received if "terminal offline" in m["title"]]


def test_a_silent_or_killed_terminal_turns_offline_in_time_and_returns(tmp_path: Path) -> None:
    hook = Hook()
    urls = tmp_path / "alert-urls"
    write_secret(urls, f"json://127.0.0.1:{hook.port}/alerts\n".encode())
    with running_broker(tmp_path / "broker", terminals=[TID]) as broker:
        cfg = GatewayConfig(
            db=tmp_path / "gateway.db", signing_key_file=tmp_path / "gateway-signing.key",
            gateway_keys_file=tmp_path / "gateway-keys.json", mqtt=gateway_config(broker),
            inss_key_file=tmp_path / "inss.key", health=HEALTH,
            alerts=AlertConfig(urls_file=urls, check_s=0.2, console_url="https://console.test"),
        )  # fmt: skip
        terminal = LiveTerminal(tmp_path / TID, TID, broker, cfg.gateway_keys_file,
                                heartbeat_s=HEARTBEAT_S)  # fmt: skip
        db = SQLiteGatewayDB(cfg.db)
        TerminalRegistry(db).register(TID, WORKPLACE, public_key=terminal.public_key)
        gateway = Gateway(cfg)
        gateway.start(wait_s=15)
        try:
            terminal.start()
            wait_for(lambda: online(db), "the terminal's first heartbeat", timeout=30)
            row = db.terminal_health(TID)
            assert row["heartbeat_s"] == HEARTBEAT_S  # the terminal said its interval
            assert row["version"]
            assert row["reader"] == "ok"

            # silent: only the sweeper can tell
            terminal.freeze()
            row = wait_for(lambda: offline_row(db), "the frozen terminal offline", timeout=30)
            assert row["reason"] == SILENT
            late_s = (row["changed_ns"] - row["heartbeat_ns"]) / 1e9
            assert late_s <= STATED_S + SLACK_S, f"offline {late_s:.2f} s after its heartbeat"
            alert = wait_for(lambda: next(iter(db.alerts_list(kinds=OFFLINE)), None), "the alert",
                             timeout=10)  # fmt: skip
            assert alert["link"] == f"https://console.test/terminals/{TID}"
            wait_for(lambda: offline_news(hook), "the alert at the webhook", timeout=10)
            assert offline_news(hook) == [f"siteclock alert: terminal offline ({TID})"]
            terminal.thaw()
            wait_for(lambda: online(db), "the thawed terminal online", timeout=30)
            wait_for(lambda: db.count_alerts(kinds=OFFLINE) == 0, "the alert resolved", timeout=10)
            resolved = db.alerts_list(open_only=False, kinds=OFFLINE)[0]
            assert resolved["resolution"].startswith("back online")
            wait_for(lambda: len(offline_news(hook)) == 2, "the resolution at the webhook",
                     timeout=10)  # fmt: skip
            assert offline_news(hook)[1] == "Resolved: terminal offline"

            # killed: the Last Will says it at once
            terminal.kill()
            row = wait_for(lambda: offline_row(db), "the killed terminal offline", timeout=30)
            late_s = (row["changed_ns"] - row["heartbeat_ns"]) / 1e9
            assert late_s <= STATED_S + SLACK_S, f"offline {late_s:.2f} s after its heartbeat"
            wait_for(lambda: db.count_alerts(kinds=OFFLINE) == 1, "a second alert", timeout=10)
            terminal.start()
            wait_for(lambda: online(db), "the restarted terminal online", timeout=30)
            wait_for(lambda: db.count_alerts(kinds=OFFLINE) == 0, "the second alert resolved",
                     timeout=10)  # fmt: skip
            assert db.count_alerts(open_only=False, kinds=OFFLINE) == 2  # one per episode
        finally:
            terminal.stop()
            gateway.stop()
            db.close()
            hook.close()
