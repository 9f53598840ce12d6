"""The console's terminals and alerts pages and ``/metrics`` in-process (Flask's test client on
a real gateway database): health figures shown, offline first, paginated; worksite scope on
pages, JSON and actions; an alert resolved by a person (audited); metrics behind their own
token, outside the login."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.alerts.rules import AlertRules
from siteclock.gateway.broker_passwords import read_password_file
from siteclock.gateway.console import ConsoleConfig, create_app
from siteclock.gateway.console.accounts import Accounts, Role
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.terminal_health import HealthConfig, TerminalHealth
from siteclock.gateway.terminals import DISABLED, TerminalRegistry
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from tests.unit.test_console_app import PASSWORD, client, csrf_of
from tests.unit.test_terminal_health import Clock, heartbeat

SITE_A, SITE_B = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"


@pytest.fixture
def site(tmp_path: Path):
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    clock = Clock()
    registry = TerminalRegistry(db)
    for i in range(5):
        registry.register(f"t-a{i}", SITE_A, public_key=bytes([i + 1]) * 32)
    registry.register("t-b0", SITE_B, public_key=b"\x09" * 32)
    health = TerminalHealth(db, HealthConfig(heartbeat_s=30, margin_s=5), clock_ns=clock)
    for t in ("t-a0", "t-a1", "t-a2", "t-b0"):
        health.on_status(t, heartbeat(queue_depth=7, oldest_unsent_age_s=42.0))
    health.on_status("t-a1", {"state": "offline", "reason": "connection lost"})
    health.on_status("t-b0", {"state": "offline", "reason": "connection lost"})
    health.on_refusal("t-a0", "bad_signature")
    health.sweep()
    AlertRules(db, AlertConfig(console_url="https://c.test"), clock_ns=clock).evaluate()
    accounts = Accounts(db)
    accounts.add("admin", PASSWORD, role=Role.ADMIN, language="en")
    accounts.add("manager-a", PASSWORD, role=Role.SITE_MANAGER, worksites=[SITE_A], language="en")
    token_file = tmp_path / "metrics.token"
    app = create_app(db, ConsoleConfig(page_size=3, metrics_token_file=token_file,
                                       default_language="en"),
                     clock_ns=clock)  # fmt: skip
    app.testing = True
    yield app, db, registry, token_file
    db.close()


def login(app, username: str):  # type: ignore[no-untyped-def]
    c = client(app)
    token = csrf_of(c.get("/login").data)
    c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    return c


def test_the_terminals_page_shows_health_offline_first_and_pages(site) -> None:
    app, _db, _registry, _ = site
    c = login(app, "admin")
    first = c.get("/api/terminals").json
    assert first["summary"] == {"online": 2, "offline": 2, "never": 2}
    assert [t["terminal"] for t in first["terminals"]] == ["t-a1", "t-a3", "t-a4"]
    assert first["more"] is True
    second = c.get("/api/terminals?page=2").json
    assert [t["terminal"] for t in second["terminals"]] == ["t-b0", "t-a0", "t-a2"]
    a0 = second["terminals"][1]
    assert (a0["state"], a0["backlog"], a0["oldest_unsent_age_s"]) == ("online", 7, 42.0)
    assert (a0["clock_synced"], a0["clock_offset_ms"], a0["version"]) == (True, 250, "0.1.0")
    assert a0["refusals"] == {"bad_signature": 1}
    offline = c.get("/api/terminals?state=offline").json["terminals"]
    assert [(t["terminal"], t["reason"]) for t in offline] == [
        ("t-a1", "connection lost"), ("t-b0", "connection lost"),
    ]  # fmt: skip
    html = c.get("/terminals/?state=offline").data.decode()
    assert 'data-terminal="t-a1" data-state="offline"' in html
    assert "connection lost" in html
    assert c.get("/api/terminals?state=bogus").status_code == 400


def test_a_site_manager_sees_only_the_terminals_and_alerts_of_their_worksites(site) -> None:
    app, db, _registry, _ = site
    c = login(app, "manager-a")
    listed = c.get("/api/terminals?state=offline").json
    assert [t["terminal"] for t in listed["terminals"]] == ["t-a1"]
    assert listed["summary"]["offline"] == 1
    assert c.get("/terminals/t-b0").status_code == 404
    assert c.get("/terminals/t-a1").status_code == 200
    alerts = c.get("/api/alerts").json["alerts"]
    assert {a["subject"] for a in alerts} == {"t-a1"}
    theirs = next(r for r in db.alerts_list() if r["subject"] == "t-b0")
    page = c.get("/alerts/")
    answer = c.post(f"/alerts/{theirs['id']}/resolve",
                    data={"resolution": "not mine", "csrf_token": csrf_of(page.data)})  # fmt: skip
    assert answer.status_code == 404
    assert db.alert(theirs["id"])["resolved_ns"] is None


def test_a_person_resolves_an_alert_with_their_words_and_it_is_audited(site) -> None:
    app, db, _registry, _ = site
    c = login(app, "admin")
    page = c.get("/alerts/")
    assert page.status_code == 200
    alert = next(r for r in db.alerts_list() if r["subject"] == "t-b0")
    assert f'id="alert-{alert["id"]}"' in page.data.decode()
    token = csrf_of(page.data)
    assert c.post(f"/alerts/{alert['id']}/resolve", data={"resolution": "x"}).status_code == 403
    c.post(f"/alerts/{alert['id']}/resolve",
           data={"resolution": "terminal unplugged for painting", "csrf_token": token})
    done = db.alert(alert["id"])
    assert (done["resolution"], done["resolved_by"]) == ("terminal unplugged for painting", "admin")
    assert next(r[3] for r in db.console_audit()) == "alert.resolve"
    shown = c.get("/alerts/?all=1").data.decode()
    assert "terminal unplugged for painting" in shown


def test_the_terminal_detail_shows_its_figures_keys_and_a_decommissioned_one_leaves(site):
    app, _db, registry, _ = site
    c = login(app, "admin")
    html = c.get("/terminals/t-a0").data.decode()
    assert "bad_signature: 1" in html
    assert registry.get("t-a0").all_keys[0].kid in html
    registry.set_status("t-a0", DISABLED)
    listed = c.get("/api/terminals?state=online").json["terminals"]
    assert [t["terminal"] for t in listed] == ["t-a2"]


def test_metrics_are_outside_the_login_behind_their_own_token(site) -> None:
    app, _db, _registry, token_file = site
    c = client(app)
    assert c.get("/metrics").status_code == 401  # not a redirect to the login page
    c.get("/metrics")  # creates the token file on first use
    token = token_file.read_text().strip()
    answer = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert b'siteclock_terminals{state="offline"} 2.0' in answer.data
    assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_decommission_from_the_terminal_page_needs_the_id_typed_and_is_audited(site) -> None:
    app, db, registry, _ = site
    c = login(app, "admin")
    page = c.get("/terminals/t-a0")
    assert b'id="decommission"' in page.data
    token = csrf_of(page.data)
    c.post("/terminals/t-a0/decommission", data={"confirm": "t-a9", "csrf_token": token})
    assert registry.get("t-a0").status == "active"  # the wrong id typed: nothing done
    c.post("/terminals/t-a0/decommission", data={"confirm": "t-a0", "csrf_token": token})
    assert registry.get("t-a0").status == "disabled"
    assert next(r[3] for r in db.console_audit()) == "terminal.decommission"
    trail = [(r["action"], r["detail"]) for r in db.terminal_audit_rows("t-a0")]
    assert ("decommission", '{"by": "admin"}') in trail
    assert "t-a0" not in [t["terminal"] for t in c.get("/api/terminals?state=online").json[
        "terminals"]]


def test_tokens_created_listed_and_revoked_within_the_managers_worksites(site) -> None:
    app, db, _registry, _ = site
    c = login(app, "manager-a")
    page = c.get("/tokens/")
    token = csrf_of(page.data)
    refused = c.post("/tokens/", data={"workplace": SITE_B, "csrf_token": token},
                     follow_redirects=True)  # fmt: skip
    assert b"only create tokens for your worksites" in refused.data
    issued = c.post("/tokens/", data={"workplace": SITE_A, "hours": "2", "note": "hall",
                                      "csrf_token": token})  # fmt: skip
    secret = issued.data.decode().split('id="token-secret">')[1].split("<")[0]
    assert len(secret.replace("-", "")) >= 20
    listed = c.get("/tokens/").data.decode()
    token_id = listed.split('data-token="')[1].split('"')[0]
    assert secret not in listed  # shown once, never again
    assert 'data-state="unused"' in listed
    c.post(f"/tokens/{token_id}/revoke", data={"csrf_token": token})
    assert 'data-state="revoked"' in c.get("/tokens/").data.decode()
    assert [r[3] for r in db.console_audit()][:2] == ["token.revoke", "token.create"]


def test_rebind_shows_the_token_for_the_new_worksite_and_the_installers_command(site) -> None:
    app, _db, registry, _ = site
    c = login(app, "admin")
    token = csrf_of(c.get("/terminals/t-a0").data)
    answer = c.post("/terminals/t-a0/rebind", data={"workplace": SITE_B, "reason": "moved",
                                                    "csrf_token": token})  # fmt: skip
    html = answer.data.decode()
    assert f"siteclock provision rebind --workplace {SITE_B}" in html
    assert 'id="token-secret"' in html
    assert registry.get("t-a0").workplace == SITE_A  # the terminal completes the move


def test_decommission_removes_the_broker_login_named_in_the_console_config(
    tmp_path: Path,
) -> None:
    """Issue 12: a terminal decommissioned from the console, served by the gateway (no
    accounts injected), loses its broker login at once when ``[console]`` names the file."""
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    registry = TerminalRegistry(db)
    registry.register("t-a0", SITE_A, public_key=b"\x01" * 32)
    passwd = tmp_path / "passwd"
    BrokerAccounts(passwd, lambda: None).set_password("t-a0")
    BrokerAccounts(passwd, lambda: None).set_password("t-a1")
    Accounts(db).add("admin", PASSWORD, role=Role.ADMIN, language="en")
    config = ConsoleConfig(default_language="en", broker_password_file=passwd)
    app = create_app(db, config)
    app.testing = True
    try:
        c = login(app, "admin")
        token = csrf_of(c.get("/terminals/t-a0").data)
        c.post("/terminals/t-a0/decommission", data={"confirm": "t-a0", "csrf_token": token})
        assert registry.get("t-a0").status == "disabled"
        assert set(read_password_file(passwd)) == {"t-a1"}  # only its own line went
    finally:
        db.close()
