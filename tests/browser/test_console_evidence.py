"""Evidence in a real headless Chromium against a running site: an employer exports a worker's
evidence from the evidence page, checks the file on the same page (intact), changes one byte
and checks it again (failed); and opens the presence report. Screenshots are saved under
build/artifacts/screenshots/."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from siteclock.gateway.evidence.document import open_document
from tests.support.browser import ConsoleStack, console_stack, log_in, save_screenshot, submit
from tests.support.ciao import make_enterprise, make_inss
from tests.support.site_terminals import DAY, at
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SITE = "1Y1003SQ5VSSZ"
ANA = make_inss(21)
BADGE = "nfc-a:0A0B0C0D"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("site")) as stack:
        reg = stack.registry
        reg.add_workplace(SITE, latitude=50.85, longitude=4.35)
        reg.add_worker("w-ana", "Ana Peeters", inss=ANA, employer=make_enterprise(1))
        reg.enrol_badge(BADGE, "w-ana")
        reg.assign("w-ana", SITE)
        stack.add_user("admin", role="admin")
        lobby = stack.add_terminal("t-lobby", SITE)
        lobby.tap(BADGE, at("07:00"))
        lobby.tap(BADGE, at("15:30"))
        wait_for(lambda: stack.sim.registrations() and len(stack.sim.registrations()) == 2,
                 "both taps registered", timeout=30)  # fmt: skip
        yield stack


def _download(driver: WebDriver, url: str) -> bytes:
    """What the browser, with its session, gets from ``url`` (as a download would be)."""
    encoded = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; for (const x of new Uint8Array(b)) s += String.fromCharCode(x);"
        "  done(btoa(s)); });",
        url,
    )
    return base64.b64decode(encoded)


def _check(driver: WebDriver, site: ConsoleStack, path: Path) -> str:
    driver.get(f"{site.url}/evidence/")
    driver.find_element(By.ID, "v-file").send_keys(str(path))
    submit(driver, "v-check")
    return driver.find_element(By.ID, "v-result").text


def test_an_exported_file_verifies_and_fails_after_a_one_byte_change(
    site: ConsoleStack, browser: WebDriver, tmp_path: Path
) -> None:
    driver = browser
    log_in(driver, site.url, "admin")
    driver.get(f"{site.url}/evidence/")
    day = DAY.date().isoformat()
    for field, value in (("e-worker", "w-ana"), ("e-from", day), ("e-to", day)):
        box = driver.find_element(By.ID, field)
        driver.execute_script("arguments[0].value = arguments[1]", box, value)
    save_screenshot(driver, "evidence")
    query = driver.execute_script(
        "return new URLSearchParams(new FormData(document.getElementById('export'))).toString()"
    )
    exported = _download(driver, f"{site.url}/evidence/export?{query}")
    evidence = open_document(exported).evidence
    assert [e["kind"] for e in evidence["events"]] == ["in", "out"]
    assert evidence["report"]["result"] == "intact"
    good = tmp_path / "evidence.json"
    good.write_bytes(exported)
    assert _check(driver, site, good) == "Intact"
    assert ANA not in driver.page_source
    save_screenshot(driver, "evidence-intact")
    changed = bytearray(exported)
    changed[len(changed) // 3] ^= 0x01
    bad = tmp_path / "evidence-changed.json"
    bad.write_bytes(bytes(changed))
    assert _check(driver, site, bad) == "Failed"
    save_screenshot(driver, "evidence-failed")


def test_the_presence_report_shows_the_day(site: ConsoleStack, browser: WebDriver) -> None:
    driver = browser
    log_in(driver, site.url, "admin")
    day = DAY.date().isoformat()
    driver.get(f"{site.url}/reports/?worksite={SITE}&from={day}&to={day}")
    table = wait_for(lambda: driver.find_element(By.ID, "presence").text, "the report table")
    assert "Ana Peeters" in table
    assert "8.50" in table  # 07:00 to 15:30
    assert ANA not in driver.page_source
    save_screenshot(driver, "reports")
