"""The console app in-process (Flask's test client over a real SQLite gateway database):
login and its rate limit, sessions, CSRF, worksite scope on pages and the JSON API, the
registrations page, its actions and the audit trail."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from siteclock.gateway.console.accounts import AccountError, Accounts, Role
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.db.console_ops import RegistrationFilter
from tests.support.ciao import make_enterprise
from tests.support.console_app import (
    INSS,
    PASSWORD,
    SITE_A,
    SITE_B,
    client,
    console_site,
    csrf_of,
    login,
)

BEFORE = Path(__file__).resolve().parents[1] / "fixtures" / "gateway_before_migrations.sql"


@pytest.fixture
def site(tmp_path: Path):
    with console_site(tmp_path) as found:
        yield found


def test_pages_need_a_login_except_the_health_probe(site) -> None:
    app, _db, _clock = site
    c = client(app)
    assert c.get("/registrations/").status_code == 302
    assert "/login" in c.get("/registrations/").headers["Location"]
    assert c.get("/api/registrations").status_code == 401
    assert c.get("/healthz").json == {"status": "ok"}


def test_login_sets_a_secure_session_cookie_and_logout_ends_it(site) -> None:
    app, db, _clock = site
    c, answer = login(app, "admin")
    assert answer.status_code == 302
    cookie = next(v for v in answer.headers.getlist("Set-Cookie") if "siteclock_session" in v)
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    page = c.get("/registrations/")
    assert page.status_code == 200
    c.post("/logout", data={"csrf_token": csrf_of(page.data)})
    assert c.get("/registrations/").status_code == 302
    actions = [row[3] for row in db.console_audit()]
    assert actions[:2] == ["logout", "login"]


def test_wrong_password_then_rate_limit_refuses_even_the_right_one(site) -> None:
    app, db, clock = site
    for _ in range(3):
        _c, answer = login(app, "admin", "wrong password!")
        assert answer.status_code == 401
    _c, answer = login(app, "admin")
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    clock.now += 61  # the window has passed
    _c, answer = login(app, "admin")
    assert answer.status_code == 302
    actions = [row[3] for row in db.console_audit()]
    assert actions.count("login.failed") == 3
    assert "login.throttled" in actions


def test_a_post_without_the_csrf_token_is_refused_and_audited(site) -> None:
    app, db, _clock = site
    c, _answer = login(app, "admin")
    refused = c.post("/registrations/t-a/1/resolve", data={"comment": "done"})
    assert refused.status_code == 403
    assert db.registration_detail("t-a", 1)["resolution"] is None
    assert db.console_audit()[0][3] == "csrf.refused"
    login_page = client(app)
    login_page.get("/login")
    no_token = login_page.post("/login", data={"username": "admin", "password": PASSWORD})
    assert no_token.status_code == 403


def test_a_site_manager_sees_only_their_worksite_in_pages_and_api(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "manager-a")
    api = c.get("/api/registrations").json
    assert {r["worksite"] for r in api["registrations"]} == {SITE_A}
    assert c.get(f"/api/registrations?worksite={SITE_B}").json["registrations"] == []
    assert c.get("/api/registrations/t-b/1").status_code == 404
    assert c.get("/registrations/t-b/1").status_code == 404
    assert SITE_B.encode() not in c.get("/registrations/").data
    token = csrf_of(c.get("/registrations/").data)
    assert c.post("/registrations/t-b/1/resolve", data={"comment": "x", "csrf_token": token}
                  ).status_code == 404  # fmt: skip
    admin, _answer = login(app, "admin")
    assert {r["worksite"] for r in admin.get("/api/registrations?state=unknown_badge").json[
        "registrations"]} == {SITE_B}  # fmt: skip


def test_keyset_pages_walk_every_row_once_newest_first(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "admin")
    seen, cursor = [], None
    while True:
        answer = c.get("/api/registrations" + (f"?before={cursor}" if cursor else "")).json
        seen += [r["terminal_time_ns"] for r in answer["registrations"]]
        cursor = answer["next"]
        if cursor is None:
            break
    assert len(seen) == 6
    assert seen == sorted(seen, reverse=True)


def test_a_rejection_shows_remarks_problem_details_and_a_masked_inss(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "manager-a")
    page = c.get("/registrations/t-a/1").data.decode()
    assert "DIMONA_NOT_OK" in page
    assert "the worker is unknown at the NSSO" in page
    assert "Ana Peeters" in page
    assert INSS[-2:] in page
    assert INSS not in page
    assert INSS not in c.get("/api/registrations/t-a/1").data.decode()


def test_resolve_and_requeue_are_audited(site) -> None:
    app, db, _clock = site
    c, _answer = login(app, "admin")
    token = csrf_of(c.get("/registrations/t-a/1").data)
    c.post("/registrations/t-a/1/resolve", data={"comment": "Dimona fixed", "csrf_token": token})
    assert db.registration_detail("t-a", 1)["resolution"] == "Dimona fixed"
    c.post("/registrations/t-b/1/requeue", data={"csrf_token": token})
    assert db.registration_detail("t-b", 1)["state"] == "queued"
    trail = {row[3]: json.loads(row[4]) for row in db.console_audit()}
    assert trail["registration.resolve"]["comment"] == "Dimona fixed"
    assert trail["registration.requeue"] == {"id": "t-b:1", "from": "unknown_badge", "moved": 1}


def test_an_unknown_badge_is_linked_from_its_registration(site) -> None:
    app, db, _clock = site
    c, _answer = login(app, "admin")
    token = csrf_of(c.get("/registrations/t-b/1").data)
    c.post("/registrations/t-b/1/link", data={"worker": "w-nobody", "csrf_token": token})
    assert db.badge_active("nfc-a:0B0B0B0B") is None
    c.post("/registrations/t-b/1/link", data={"worker": "w-ana", "csrf_token": token})
    assert db.badge_active("nfc-a:0B0B0B0B") is True
    assert db.console_audit()[0][3] == "badge.link"


def test_filter_by_employer_state_and_day(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "admin")
    number = make_enterprise(1)
    dotted = f"{number[:4]}.{number[4:7]}.{number[7:]}"
    found = c.get(f"/api/registrations?employer={dotted}").json["registrations"]
    assert [r["id"] for r in found] == ["t-a:1"]
    assert found[0]["employer"] == number
    assert c.get("/api/registrations?employer=0999999999").json["registrations"] == []
    rejected = c.get("/api/registrations?state=rejected").json["registrations"]
    assert [r["id"] for r in rejected] == ["t-a:1"]
    assert c.get("/api/registrations?day=2001-01-01").json["registrations"] == []


def test_filters_refuse_an_inss_and_a_bad_day(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "admin")
    assert c.get(f"/api/registrations?worker={INSS}").status_code == 400
    assert c.get("/api/registrations?day=yesterday").status_code == 400
    assert c.get(f"/api/registrations?before={10**30}:t-a:1").status_code == 400
    assert c.get("/api/registrations?before=nonsense").status_code == 400


def test_account_rules(site) -> None:
    _app, db, _clock = site
    accounts = Accounts(db)
    with pytest.raises(AccountError, match="at least one worksite"):
        accounts.add("bert", PASSWORD, role=Role.SITE_MANAGER)
    with pytest.raises(AccountError, match="12 characters"):
        accounts.add("bert", "short", role=Role.ADMIN)
    with pytest.raises(AccountError, match="exists"):
        accounts.add("admin", PASSWORD, role=Role.ADMIN)
    assert accounts.check_password("nobody", PASSWORD) is None
    accounts.update("manager-a", disabled=True)
    assert accounts.check_password("manager-a", PASSWORD) is None


def test_roll_call_lists_who_is_on_a_visible_worksite_only(site) -> None:
    app, _db, _clock = site
    c, _answer = login(app, "manager-a")
    present = c.get("/api/rollcall").json
    assert present["worksite"] == SITE_A
    assert [p["name"] for p in present["present"]] == ["Ana Peeters"]
    assert present["present"][0]["inss"].endswith(INSS[-2:])
    assert "Ana Peeters" in c.get("/rollcall/").data.decode()
    assert c.get(f"/api/rollcall?worksite={SITE_B}").status_code == 404
    assert c.get(f"/rollcall/?worksite={SITE_B}").status_code == 404
    admin, _answer = login(app, "admin")
    assert admin.get("/api/rollcall?worksite=not-a-reference").status_code == 404
    assert admin.get("/workers/?worksite=not-a-reference").status_code == 404


def test_users_page_is_for_administrators_and_its_changes_are_audited(site) -> None:
    app, db, _clock = site
    manager, _answer = login(app, "manager-a")
    assert manager.get("/users/").status_code == 403
    assert manager.get("/audit/").status_code == 403
    assert b"/users/" not in manager.get("/registrations/").data  # not in their menu
    admin, _answer = login(app, "admin")
    token = csrf_of(admin.get("/users/").data)
    bert_form = {"username": "bert", "password": PASSWORD, "role": "site_manager",
                 "worksites": SITE_B, "language": "fr"}  # fmt: skip
    admin.post("/users/add", data={"csrf_token": token, **bert_form})
    assert Accounts(db).get("bert").worksites == frozenset({SITE_B})
    bert, _answer = login(app, "bert")
    assert bert.get("/api/registrations").status_code == 200
    admin.post("/users/bert/update", data={"csrf_token": token, "change": "worksites",
                                           "worksites": f"{SITE_A} {SITE_B}"})  # fmt: skip
    assert Accounts(db).get("bert").worksites == frozenset({SITE_A, SITE_B})
    # other worksites end bert's session: he logs in again
    assert bert.get("/api/registrations").status_code == 401
    admin.post("/users/bert/update", data={"csrf_token": token, "change": "disable"})
    assert Accounts(db).get("bert") is None
    refused = admin.post("/users/admin/update", data={"csrf_token": token, "change": "remove"},
                         follow_redirects=True)  # fmt: skip
    assert "cannot remove your own account" in refused.data.decode()
    trail = admin.get("/audit/").data.decode()
    assert "user.add" in trail
    assert "user.update" in trail


def test_pages_speak_the_language_asked_for_and_remember_it(site) -> None:
    app, _db, _clock = site
    c = client(app)
    assert "Se connecter" in c.get("/login?lang=fr").data.decode()
    assert "Se connecter" in c.get("/login").data.decode()  # the cookie remembers
    assert "Aanmelden" in c.get("/login?lang=nl").data.decode()
    fresh = client(app)
    german_first = fresh.get("/login", headers={"Accept-Language": "de, en;q=0.5"})
    assert "Log in" in german_first.data.decode()


def test_an_idle_session_ends_and_a_disabled_account_is_logged_out(tmp_path: Path) -> None:
    now = [time.time_ns()]
    with console_site(tmp_path, clock_ns=lambda: now[0]) as (app, db, _clock):
        c, _answer = login(app, "manager-a")
        now[0] += 7 * 3600 * 10**9  # within the 8 h idle limit: still in
        assert c.get("/api/registrations").status_code == 200
        now[0] += 7 * 3600 * 10**9  # 7 h after its last use: still in
        assert c.get("/api/registrations").status_code == 200
        now[0] += 9 * 3600 * 10**9  # 9 h idle: out
        assert c.get("/api/registrations").status_code == 401
        other, _answer = login(app, "admin")
        Accounts(db).update("admin", disabled=True)
        assert other.get("/api/registrations").status_code == 401


def test_a_gateway_db_from_before_the_console_gets_its_tables(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript(BEFORE.read_text())
    conn.close()
    db = SQLiteGatewayDB(old)
    try:
        Accounts(db).add("an", PASSWORD, role=Role.ADMIN)
        assert Accounts(db).check_password("an", PASSWORD) is not None
        assert db.registrations_page(RegistrationFilter(), 10)  # the old rows, paged
    finally:
        db.close()


def test_an_inss_typed_as_a_user_name_is_masked_in_the_audit_trail(site) -> None:
    app, db, _clock = site
    login(app, INSS, "wrong password!")
    assert INSS not in str(db.console_audit())


def test_a_subcontractors_registration_on_the_site_is_visible_to_its_site_manager(site) -> None:
    app, db, _clock = site
    subcontractor = make_enterprise(9)
    sent = json.dumps({"enterpriseNumber": subcontractor})
    db.set_registrations([(("t-a", 2), {"employer": sent, "workplace": SITE_A})])
    c, _answer = login(app, "manager-a")
    found = c.get(f"/api/registrations?employer={subcontractor}").json["registrations"]
    assert [(r["id"], r["employer"]) for r in found] == [("t-a:2", subcontractor)]


def test_pages_carry_the_security_headers(site) -> None:
    app, _db, _clock = site
    answer = client(app).get("/login")
    assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" in answer.headers


def test_sessions_left_idle_are_deleted_at_the_next_login(tmp_path: Path) -> None:
    now = [time.time_ns()]
    with console_site(tmp_path, clock_ns=lambda: now[0]) as (app, db, _clock):
        login(app, "manager-a")
        now[0] += 9 * 3600 * 10**9
        login(app, "admin")
        # everything older than now: only the admin's fresh session was left to delete
        assert db.expire_console_sessions(now[0] + 1) == 1


def test_a_wrong_inss_key_path_makes_no_new_key_for_a_database_with_workers(site, tmp_path) -> None:
    from siteclock.gateway.console.people import People

    _app, db, _clock = site
    wrong = tmp_path / "elsewhere" / "inss.key"
    assert People(db, wrong).registry is None
    assert not wrong.exists()
    assert People(db, tmp_path / "inss.key").registry is not None


@pytest.mark.parametrize("sort_at_most", [0, 20_000])
def test_state_and_employer_filters_agree_on_both_read_paths(site, monkeypatch, sort_at_most):
    """Few matches: read through the column's index and sorted; many: checked along the time
    walk (0 forces that here). Both give the same page."""
    from siteclock.gateway.db import console_ops

    monkeypatch.setattr(console_ops, "SORT_AT_MOST", sort_at_most)
    app, _db, _clock = site
    c, _answer = login(app, "admin")
    rejected = c.get("/api/registrations?state=rejected").json["registrations"]
    assert [r["id"] for r in rejected] == ["t-a:1"]
    found = c.get(f"/api/registrations?employer={make_enterprise(1)}").json["registrations"]
    assert [r["id"] for r in found] == ["t-a:1"]
    assert c.get("/api/registrations?state=registered").json["registrations"] == []
