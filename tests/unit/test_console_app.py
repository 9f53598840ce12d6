"""The console app in-process (Flask's test client over a real SQLite gateway database):
login and its rate limit, sessions, CSRF, worksite scope on pages and the JSON API, the
registrations page, its actions and the audit trail."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from siteclock.gateway.console import ConsoleConfig, create_app
from siteclock.gateway.console.accounts import AccountError, Accounts, Role
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.registry import Registry
from tests.support.ciao import make_enterprise, make_inss
from tests.support.inbox import TerminalFeed, insert

SITE_A, SITE_B = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
PASSWORD = "correct horse battery"
INSS = make_inss(7)
EMPLOYER_SENT = json.dumps({"enterpriseNumber": make_enterprise(1)}, sort_keys=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(tmp_path: Path):
    db_path = tmp_path / "gateway.db"
    db = SQLiteGatewayDB(db_path)
    registry = Registry(db, tmp_path / "inss.key")
    registry.add_workplace(SITE_A, latitude=50.85, longitude=4.35)
    registry.add_workplace(SITE_B, latitude=51.0, longitude=4.0)
    registry.add_worker("w-ana", "Ana Peeters", inss=INSS, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:0A0A0A0A", "w-ana")
    base = time.time_ns() - 3600 * 10**9
    feed_a, feed_b = TerminalFeed("t-a", SITE_A), TerminalFeed("t-b", SITE_B)
    insert(db_path, [feed_a.event("in", "nfc-a:0A0A0A0A", base + i * 10**9) for i in range(5)])
    insert(db_path, [feed_b.event("in", "nfc-a:0B0B0B0B", base + 100 * 10**9)])
    db.take_new_events(time.time_ns(), full=True)
    problem = {"status": 400, "type": "urn:problem:ssin", "title": "Invalid SSIN",
               "detail": "the worker is unknown at the NSSO"}  # fmt: skip
    db.set_registrations([
        (("t-a", 1), {"state": "rejected", "worker_ref": "w-ana", "employer": EMPLOYER_SENT,
                      "workplace": SITE_A, "ciao_id": "ciao-1", "validity": "invalid",
                      "remarks": json.dumps([{"code": "DIMONA_NOT_OK"}]),
                      "problem": json.dumps(problem)}),
        (("t-b", 1), {"state": "unknown_badge"}),
    ])  # fmt: skip
    accounts = Accounts(db)
    accounts.add("admin", PASSWORD, role=Role.ADMIN)
    accounts.add("manager-a", PASSWORD, role=Role.SITE_MANAGER, worksites=[SITE_A])
    clock = Clock()
    app = create_app(
        db, ConsoleConfig(login_failures=3, login_window_s=60, page_size=2),
        inss_key_file=tmp_path / "inss.key", clock=clock,
    )  # fmt: skip
    app.testing = True
    yield app, db, clock
    registry.close()
    db.close()


class HttpsClient(FlaskClient):
    """The console's cookies are Secure: the test client must speak HTTPS for them."""

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


def client(app):
    app.test_client_class = HttpsClient
    return app.test_client()


def csrf_of(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def login(app, username: str, password: str = PASSWORD):
    c = client(app)
    token = csrf_of(c.get("/login").data)
    answer = c.post("/login", data={"username": username, "password": password,
                                    "csrf_token": token})  # fmt: skip
    return c, answer


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
