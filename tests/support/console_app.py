"""The console app in-process for unit tests: a real SQLite gateway database with two
worksites, a worker, a few stored taps (one rejected, one of an unknown badge), two accounts,
and Flask's test client speaking HTTPS (the console's cookies are Secure).

Example::

    def test_x(console_site):
        app, db, clock = console_site
        c, answer = login(app, "manager-a")
        assert c.get("/api/registrations").status_code == 200
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from siteclock.gateway.console import ConsoleConfig, create_app
from siteclock.gateway.console.accounts import Accounts, Role
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


@contextmanager
def console_site(
    tmp_path: Path, *, clock_ns: Callable[[], int] = time.time_ns
) -> Iterator[tuple[Flask, SQLiteGatewayDB, Clock]]:
    """The app on its database and the login limit's clock; ``clock_ns`` drives sessions."""
    db_path = tmp_path / "gateway.db"
    db = SQLiteGatewayDB(db_path)
    registry = Registry(db, tmp_path / "inss.key")
    registry.add_workplace(SITE_A, latitude=50.85, longitude=4.35)
    registry.add_workplace(SITE_B, latitude=51.0, longitude=4.0)
    registry.add_worker("w-ana", "Ana Peeters", inss=INSS, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:0A0A0A0A", "w-ana")
    registry.assign("w-ana", SITE_A)
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
    accounts.add("admin", PASSWORD, role=Role.ADMIN, language="en")
    accounts.add("manager-a", PASSWORD, role=Role.SITE_MANAGER, worksites=[SITE_A], language="en")
    clock = Clock()
    app = create_app(
        db, ConsoleConfig(login_failures=3, login_window_s=60, page_size=2, default_language="en"),
        inss_key_file=tmp_path / "inss.key", clock=clock, clock_ns=clock_ns,
    )  # fmt: skip
    app.testing = True
    yield app, db, clock
    registry.close()
    db.close()


class HttpsClient(FlaskClient):
    """The console's cookies are Secure: the test client must speak HTTPS for them."""

    def open(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


def client(app: Flask) -> FlaskClient:
    app.test_client_class = HttpsClient
    return app.test_client()


def csrf_of(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def login(app: Flask, username: str, password: str = PASSWORD) -> tuple[FlaskClient, Any]:
    c = client(app)
    token = csrf_of(c.get("/login").data)
    answer = c.post("/login", data={"username": username, "password": password,
                                    "csrf_token": token})  # fmt: skip
    return c, answer
