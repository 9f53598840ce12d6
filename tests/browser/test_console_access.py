"""The console in a real headless Chromium against a running site: real Mosquitto, terminals
tapping through it, the gateway relaying to the CIaO simulator, the console over HTTPS.

* an employer logs in and sees every registration's fate; screenshots of the main pages, on a
  desk and on a phone, are saved under build/artifacts/screenshots/;
* a rejection shows the NSSO's remark, a refusal its problem details;
* a site manager sees their worksite only, in the pages and in the JSON API;
* a form whose CSRF token was tampered with is refused, and so is the right password after
  too many wrong ones;
* an unknown badge is linked to a worker from its registration, and its tap is then relayed;
* the roll call shows who is on site; workers are imported from a ``;`` CSV.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.browser import (
    PHONE,
    ConsoleStack,
    chromium,
    console_stack,
    log_in,
    save_screenshot,
    submit,
)
from tests.support.ciao import make_enterprise, make_inss
from tests.support.site_terminals import at
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SITE_A, SITE_B = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
EMPLOYER = make_enterprise(1)
ANA, BOB, COR, DAN = make_inss(1), make_inss(2), make_inss(3), make_inss(4)
UNKNOWN_BADGE = "nfc-a:0F0F0F0F"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("site")) as stack:
        stack.sim.set_reference_data(dimona_not_ok={(ANA, EMPLOYER)})
        reg = stack.registry
        reg.add_workplace(SITE_A, latitude=50.85, longitude=4.35)
        # SITE_B's address lacks the post code CIaO needs: its taps are refused (400).
        reg.add_workplace(SITE_B, address={"street": "Rue Haute", "houseNumber": "1"})
        reg.add_worker("w-dan", "Dan Wouters", inss=DAN, employer=EMPLOYER)  # no badge yet
        reg.assign("w-dan", SITE_A)
        for ref, name, inss, badge, place in (
            ("w-ana", "Ana Peeters", ANA, "nfc-a:01010101", SITE_A),
            ("w-bob", "Bob Janssens", BOB, "nfc-a:02020202", SITE_A),
            ("w-cor", "Cor Dubois", COR, "nfc-a:03030303", SITE_B),
        ):
            reg.add_worker(ref, name, inss=inss, employer=EMPLOYER)
            reg.enrol_badge(badge, ref)
            reg.assign(ref, place)
        for username, role, sites in (
            ("admin", "admin", ()), ("manager-a", "site_manager", (SITE_A,)),
            ("manager-b", "site_manager", (SITE_B,)), ("locked", "admin", ()),
        ):  # fmt: skip
            stack.add_user(username, role=role, worksites=sites)
        lobby = stack.add_terminal("t-lobby", SITE_A)
        gate = stack.add_terminal("t-gate", SITE_B)
        lobby.tap("nfc-a:01010101", at("07:00"))
        lobby.tap("nfc-a:02020202", at("07:02"))
        lobby.tap(UNKNOWN_BADGE, at("07:03"))
        gate.tap("nfc-a:03030303", at("07:05"))
        wait_for(lambda: _states(stack) == {
            ("t-lobby", 1): "rejected", ("t-lobby", 2): "registered",
            ("t-lobby", 3): "unknown_badge", ("t-gate", 1): "refused",
        }, lambda: f"final states, got {_states(stack)}", timeout=30)  # fmt: skip
        yield stack


def _states(stack: ConsoleStack) -> dict[tuple[str, int], str]:
    from siteclock.gateway.db import SQLiteGatewayDB

    db = SQLiteGatewayDB(stack.db)
    try:
        return {(r["terminal"], r["seq"]): r["state"] for r in db.select_registrations()}
    finally:
        db.close()


def _rows(driver: WebDriver) -> dict[str, str]:
    """Registration id -> row text, as the registrations table shows them."""
    return {
        row.get_attribute("data-id"): row.text
        for row in driver.find_elements(By.CSS_SELECTOR, "#registrations tbody tr[data-id]")
    }


def _json(driver: WebDriver, url: str) -> tuple[str, object]:
    """What the browser (with its session cookie) gets from a JSON endpoint."""
    driver.get(url)
    text = driver.find_element(By.TAG_NAME, "body").text
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None


def test_an_employer_logs_in_and_sees_every_registrations_fate(site, fresh) -> None:
    driver = fresh
    driver.get(f"{site.url}/registrations/")
    assert "/login" in driver.current_url  # nothing without login
    log_in(driver, site.url, "admin")
    assert driver.current_url.endswith("/registrations/")
    rows = wait_for(lambda: len(_rows(driver)) == 4 and _rows(driver), "four rows")
    assert "Ana Peeters" in rows["t-lobby:1"]
    assert "rejected" in rows["t-lobby:1"]
    assert "registered" in rows["t-lobby:2"]
    assert UNKNOWN_BADGE in rows["t-lobby:3"]
    assert "unknown_badge" in rows["t-lobby:3"]
    page = driver.page_source
    for inss in (ANA, BOB, COR):
        assert inss not in page  # masked: only the check digits show
    assert ANA[-2:] in rows["t-lobby:1"]
    save_screenshot(driver, "registrations")
    driver.find_element(By.CSS_SELECTOR, '[data-id="t-lobby:3"] a').click()
    save_screenshot(driver, "registration-unknown-badge")


def test_a_rejection_shows_its_remark_and_a_refusal_its_problem_details(site, fresh) -> None:
    driver = fresh
    log_in(driver, site.url, "admin")
    driver.get(f"{site.url}/registrations/t-lobby/1")
    assert "rejected" in driver.find_element(By.ID, "state").text
    assert "DIMONA" in driver.find_element(By.ID, "remarks").text.upper()
    save_screenshot(driver, "registration-rejected")
    driver.get(f"{site.url}/registrations/t-gate/1")
    assert "refused" in driver.find_element(By.ID, "state").text
    problem = driver.find_element(By.ID, "problem").text
    assert "400" in problem, problem
    assert "postCode" in problem, problem
    save_screenshot(driver, "registration-refused")


def test_a_site_manager_cannot_see_another_worksite(site, fresh) -> None:
    driver = fresh
    log_in(driver, site.url, "manager-a")
    rows = _rows(driver)
    assert set(rows) == {"t-lobby:1", "t-lobby:2", "t-lobby:3"}
    assert SITE_B not in driver.page_source
    assert "Cor Dubois" not in driver.page_source
    driver.get(f"{site.url}/registrations/?worksite={SITE_B}")
    assert _rows(driver) == {}
    driver.get(f"{site.url}/registrations/t-gate/1")
    assert "404" in driver.find_element(By.TAG_NAME, "h1").text
    text, listed = _json(driver, f"{site.url}/api/registrations")
    assert listed is not None, text
    assert {r["worksite"] for r in listed["registrations"]} == {SITE_A}  # type: ignore[index]
    text, _answer = _json(driver, f"{site.url}/api/registrations/t-gate/1")
    assert "not_found" in text or "not found" in text.lower()
    assert "Cor Dubois" not in text


def test_a_tampered_csrf_token_is_refused(site, fresh) -> None:
    driver = fresh
    log_in(driver, site.url, "admin")
    driver.get(f"{site.url}/registrations/t-lobby/1")
    driver.find_element(By.ID, "comment").send_keys("called the social secretariat")
    driver.execute_script(
        "for (const f of document.querySelectorAll('input[name=csrf_token]')) f.value = 'forged';"
    )
    submit(driver, "resolve")
    assert "expired or did not come from this console" in driver.page_source
    driver.get(f"{site.url}/registrations/t-lobby/1")
    assert not driver.find_elements(By.ID, "resolution")
    # the same form with its own token goes through
    driver.find_element(By.ID, "comment").send_keys("called the social secretariat")
    submit(driver, "resolve")
    assert "called the social secretariat" in driver.find_element(By.ID, "resolution").text


def test_too_many_wrong_passwords_refuse_even_the_right_one(site, fresh) -> None:
    driver = fresh
    for _ in range(5):
        log_in(driver, site.url, "locked", "not-the-password")
        assert "Wrong user name or password" in driver.page_source, driver.page_source[:1500]
    log_in(driver, site.url, "locked")
    assert "Too many failed logins" in driver.find_element(By.ID, "login-error").text
    assert "/login" in driver.current_url
    save_screenshot(driver, "login-throttled")


def test_pages_fit_a_phone(site) -> None:
    with chromium(phone=True) as phone:
        log_in(phone, site.url, "manager-a")
        assert phone.execute_script("return window.innerWidth") == PHONE[0]
        pages = (
            ("/registrations/", "registrations-phone"),
            ("/registrations/t-lobby/1?lang=nl", "registration-phone-nl"),
            ("/rollcall/?lang=fr", "rollcall-phone-fr"),
            ("/workers/?lang=en", "workers-phone"),
        )
        for page, shot in pages:
            phone.get(site.url + page)
            width = phone.execute_script("return document.documentElement.scrollWidth")
            assert width <= PHONE[0], f"{page} is {width}px wide on a {PHONE[0]}px phone"
            save_screenshot(phone, shot)


def test_an_unknown_badge_linked_from_its_tap_is_then_relayed(site, fresh) -> None:
    driver = fresh
    log_in(driver, site.url, "manager-a")
    driver.get(f"{site.url}/registrations/t-lobby/3")
    driver.find_element(By.ID, "link-worker").send_keys("w-dan")
    submit(driver, "link")
    assert "Badge linked" in driver.page_source
    wait_for(lambda: _states(site)[("t-lobby", 3)] == "registered",
             lambda: f"the linked tap relayed, got {_states(site)}", timeout=20)  # fmt: skip
    driver.get(f"{site.url}/registrations/t-lobby/3")
    assert "registered" in driver.find_element(By.ID, "state").text
    assert "Dan Wouters" in driver.page_source


def test_the_roll_call_shows_who_is_on_site(site, fresh) -> None:
    driver = fresh
    log_in(driver, site.url, "manager-a")
    driver.get(f"{site.url}/rollcall/")
    present = {
        row.get_attribute("data-worker")
        for row in driver.find_elements(By.CSS_SELECTOR, "#rollcall tr[data-worker]")
    }
    assert {"w-ana", "w-bob"} <= present  # Ana's `in` was rejected by the NSSO: she is still here
    assert "w-cor" not in present  # another worksite
    save_screenshot(driver, "rollcall")


def test_workers_are_imported_from_a_semicolon_csv(site, fresh, tmp_path) -> None:
    driver = fresh
    log_in(driver, site.url, "manager-a")
    csv_file = tmp_path / "workers.csv"
    csv_file.write_text(
        "inss;name;employer;capacity;badge\n"
        f"{make_inss(20)};Els Peeters;{EMPLOYER};employee;nfc-a:0A0B0C0D\n"
        f"{make_inss(21)};Fons Vos;{EMPLOYER};zzp;\n"
    )
    driver.get(f"{site.url}/workers/")
    driver.find_element(By.ID, "csv-file").send_keys(str(csv_file))
    submit(driver, "csv-import")
    page = driver.page_source
    assert "1 worker(s) imported, 1 row(s) rejected" in page
    assert "line 3: capacity" in page
    names = driver.find_element(By.ID, "workers").text
    assert "Els Peeters" in names
    assert make_inss(20) not in page
    save_screenshot(driver, "workers")
    log_in(driver, site.url, "admin")
    driver.get(f"{site.url}/users/")
    save_screenshot(driver, "users")
