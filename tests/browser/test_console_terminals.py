"""The terminals and alerts pages in a real headless Chromium against a running site (real
Mosquitto, the gateway with its console over HTTPS) and a real ``siteclock terminal`` process:

* killed, the terminal turns offline on the terminals page within the stated time (its Last
  Will at once; silence within heartbeat + margin + sweep at worst), an alert names it on the
  alerts page; started again, it is online and the alert resolved;
* screenshots of both pages are saved under build/artifacts/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from siteclock.gateway.db import SQLiteGatewayDB
from tests.support.browser import ConsoleStack, console_stack, log_in, save_screenshot
from tests.support.live_terminal import WORKPLACE, LiveTerminal
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TID = "t-yard-01"
HEARTBEAT_S = 1.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleStack, LiveTerminal]]:
    with console_stack(tmp_path_factory.mktemp("site")) as stack:
        stack.add_user("admin", role="admin")
        stack.broker.add_terminal(TID)
        assert stack.cfg.gateway_keys_file is not None
        terminal = LiveTerminal(stack.root / TID, TID, stack.broker, stack.cfg.gateway_keys_file,
                                heartbeat_s=HEARTBEAT_S)  # fmt: skip
        stack.terminal_registry.register(TID, WORKPLACE, public_key=terminal.public_key)
        try:
            yield stack, terminal
        finally:
            terminal.stop()


def row_state(driver: WebDriver, url: str) -> str:
    """The terminal's state as its row on the terminals page shows it, reloaded."""
    driver.get(f"{url}/terminals/?q={TID}")
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-terminal="{TID}"]')
    return rows[0].get_attribute("data-state") if rows else ""


def test_a_killed_terminal_turns_offline_on_the_page_and_returns(site, fresh: WebDriver):
    stack, terminal = site
    health = stack.gateway.cfg.health
    stated_s = HEARTBEAT_S + health.margin_s + health.sweep_s
    db = SQLiteGatewayDB(stack.cfg.db)
    try:
        log_in(fresh, stack.url, "admin")
        terminal.start()
        wait_for(lambda: row_state(fresh, stack.url) == "online", "the terminal online",
                 timeout=30)  # fmt: skip
        save_screenshot(fresh, "terminals-online")

        killed = time.monotonic()
        terminal.kill()
        wait_for(lambda: row_state(fresh, stack.url) == "offline", "the terminal offline",
                 timeout=stated_s + 10)  # fmt: skip
        seen_s = time.monotonic() - killed
        row = db.terminal_health(TID)
        late_s = (row["changed_ns"] - row["heartbeat_ns"]) / 1e9
        assert late_s <= stated_s, f"offline {late_s:.1f} s after its last heartbeat"
        cell = fresh.find_element(By.CSS_SELECTOR, f'tr[data-terminal="{TID}"]').text
        assert "offline" in cell
        save_screenshot(fresh, "terminals-offline")

        def offline_alert() -> bool:
            fresh.get(f"{stack.url}/alerts/?kind=terminal_offline")
            rows = fresh.find_elements(By.CSS_SELECTOR, '#alerts tr[data-kind="terminal_offline"]')
            return any(TID in r.text for r in rows)

        wait_for(offline_alert, "the offline alert on the alerts page", timeout=15)
        link = fresh.find_element(By.CSS_SELECTOR, '#alerts tr[data-kind="terminal_offline"] a')
        assert link.get_attribute("href").endswith(f"/terminals/{TID}")
        save_screenshot(fresh, "alerts")

        terminal.start()
        wait_for(lambda: row_state(fresh, stack.url) == "online", "the terminal back online",
                 timeout=30)  # fmt: skip
        wait_for(lambda: not offline_alert(), "the alert resolved", timeout=15)
        fresh.get(f"{stack.url}/alerts/?kind=terminal_offline&all=1")
        resolved = fresh.find_element(By.CSS_SELECTOR, '#alerts tr[data-open="0"]').text
        assert "back online" in resolved
        save_screenshot(fresh, "alerts-resolved")
        print(f"offline seen in the browser {seen_s:.1f} s after the kill (stated {stated_s} s)")
    finally:
        db.close()
