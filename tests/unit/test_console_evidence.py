"""The console's evidence and reports pages in-process (Flask's test client on a real SQLite
gateway database): exports verify, a changed byte fails the upload check, worksite scope holds,
every export is audited, and no page carries a full INSS."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import pytest

from siteclock.gateway.console import ConsoleConfig, create_app
from siteclock.gateway.console.accounts import Accounts, Role
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.evidence.document import open_document
from siteclock.gateway.registry import Registry
from siteclock.gateway.site_time import day_start_ns
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import create
from tests.support.ciao import make_enterprise, make_inss
from tests.support.inbox import TerminalFeed, insert
from tests.unit.test_console_app import PASSWORD, csrf_of, login

SITE_A, SITE_B = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
INSS_ANA, INSS_BO = make_inss(7), make_inss(8)
NOV_3 = day_start_ns(date(2026, 11, 3))
H = 3600 * 10**9
EXPORT = {"worker": "w-ana", "worksite": SITE_A, "from": "2026-11-01", "to": "2026-11-30"}


@pytest.fixture
def app(tmp_path: Path):
    db_path = tmp_path / "gateway.db"
    db = SQLiteGatewayDB(db_path)
    registry = Registry(db, tmp_path / "inss.key")
    for site in (SITE_A, SITE_B):
        registry.add_workplace(site, latitude=50.85, longitude=4.35)
    registry.add_worker("w-ana", "Ana Peeters", inss=INSS_ANA, employer=make_enterprise(1))
    registry.add_worker("w-bo", "Bo Claes", inss=INSS_BO, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:0A0A0A0A", "w-ana")
    registry.enrol_badge("nfc-a:0B0B0B0B", "w-bo")
    feed_a, feed_b = TerminalFeed("t-a", SITE_A), TerminalFeed("t-b", SITE_B)
    terminals = TerminalRegistry(db)
    for feed in (feed_a, feed_b):
        terminals.register(feed.terminal_id, feed.workplace,
                           public_key=feed.signer.public_key_bytes())  # fmt: skip
    insert(db_path, [feed_a.event("in", "nfc-a:0A0A0A0A", NOV_3 + 7 * H),
                     feed_a.event("out", "nfc-a:0A0A0A0A", NOV_3 + 15 * H),
                     feed_b.event("in", "nfc-a:0B0B0B0B", NOV_3 + 8 * H)])  # fmt: skip
    db.take_new_events(NOV_3, full=True)
    db.set_registrations([(("t-a", 1), {"state": "registered", "worker_ref": "w-ana",
                                        "ciao_id": "ciao-1", "validity": "valid"})])  # fmt: skip
    db.record_decisions([("t-a", 1, SITE_A, "w-ana", NOV_3 + 7 * H, "in", "in", "", 1),
                         ("t-a", 2, SITE_A, "w-ana", NOV_3 + 15 * H, "out", "out", "", 1),
                         ("t-b", 1, SITE_B, "w-bo", NOV_3 + 8 * H, "in", "in", "", 1)])  # fmt: skip
    accounts = Accounts(db)
    accounts.add("admin", PASSWORD, role=Role.ADMIN, language="en")
    accounts.add("manager-b", PASSWORD, role=Role.SITE_MANAGER, worksites=[SITE_B])
    signing_key = tmp_path / "gateway-signing.key"
    create(signing_key)
    flask_app = create_app(db, ConsoleConfig(), inss_key_file=tmp_path / "inss.key",
                           clock_ns=lambda: NOV_3 + 20 * H,
                           extras={"signing_key_file": signing_key})  # fmt: skip
    flask_app.testing = True
    yield flask_app, db
    registry.close()
    db.close()


def test_an_exported_file_verifies_on_upload_and_fails_after_one_changed_byte(app) -> None:
    flask_app, db = app
    c, _ = login(flask_app, "admin")
    answer = c.get("/evidence/export", query_string=EXPORT)
    assert answer.status_code == 200
    assert "attachment" in answer.headers["Content-Disposition"]
    opened = open_document(answer.data)
    assert [e["kind"] for e in opened.evidence["events"]] == ["in", "out"]
    assert opened.evidence["worker"]["inss"] == INSS_ANA  # the export: the one place for it
    assert opened.evidence["report"]["result"] == "intact"
    audit = [row for row in db.console_audit() if row[3] == "evidence_export"]
    assert audit[0][2] == "admin"
    assert json.loads(audit[0][4])["worker"] == "w-ana"
    token = csrf_of(c.get("/evidence/").data)

    def upload(data: bytes):  # type: ignore[no-untyped-def]
        form = {"csrf_token": token, "file": (io.BytesIO(data), "e.json")}
        return c.post("/evidence/verify", data=form)

    good = upload(answer.data)
    assert good.status_code == 200
    assert b'id="v-result">Intact' in good.data
    assert INSS_ANA.encode() not in good.data  # the check shows the result, not the INSS
    changed = bytearray(answer.data)
    changed[len(changed) // 2] ^= 0x01
    bad = upload(bytes(changed))
    assert bad.status_code == 422
    assert b'id="v-result">Failed' in bad.data


def test_csv_export_and_the_refusals(app) -> None:
    flask_app, _db = app
    c, _ = login(flask_app, "admin")
    answer = c.get("/evidence/export", query_string={**EXPORT, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(answer.data.decode())))
    assert [r["kind"] for r in rows] == ["in", "out"]
    assert rows[0]["checked"] == "signature ok"
    for refused in ({"worker": INSS_ANA}, {"worker": "w-nobody"}, {"to": "2026-10-01"}):
        assert c.get("/evidence/export", query_string={**EXPORT, **refused}).status_code == 400


def test_a_site_manager_exports_and_reports_only_their_worksites(app) -> None:
    flask_app, _db = app
    c, _ = login(flask_app, "manager-b")
    assert c.get("/evidence/export", query_string=EXPORT).status_code == 404
    mine = c.get("/evidence/export", query_string={**EXPORT, "worker": "w-bo", "worksite": SITE_B})
    assert [e["badge"] for e in open_document(mine.data).evidence["events"]] == ["nfc-a:0B0B0B0B"]
    assert c.get("/reports/", query_string={"worksite": SITE_A}).status_code == 404
    page = c.get("/reports/", query_string={"from": "2026-11-01", "to": "2026-11-30"})
    assert b"Bo Claes" in page.data
    assert b"Ana Peeters" not in page.data


def test_the_reports_page_and_its_csv_give_hours_without_any_inss(app) -> None:
    flask_app, db = app
    c, _ = login(flask_app, "admin")
    period = {"from": "2026-11-01", "to": "2026-11-30"}
    page = c.get("/reports/", query_string={**period, "worksite": SITE_A})
    assert page.status_code == 200
    assert b"Ana Peeters" in page.data
    assert b"8.00" in page.data
    answer = c.get("/reports/presence.csv", query_string={**period, "sep": "semicolon"})
    rows = list(csv.DictReader(io.StringIO(answer.data.decode()), delimiter=";"))
    assert {(r["worker_ref"], r["hours"]) for r in rows} == {("w-ana", "8.00"), ("w-bo", "0.00")}
    for text in (page.data, answer.data, c.get("/evidence/").data):
        assert INSS_ANA.encode() not in text
        assert INSS_BO.encode() not in text
    assert any(row[3] == "report_export" for row in db.console_audit())
