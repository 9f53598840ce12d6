"""The console's workers page with the CLI's rules: add, CSV import (``;`` too), link, block,
unblock, remove; a site manager only on their worksites; every change audited."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from siteclock.gateway.registry import Registry
from tests.support.ciao import make_enterprise, make_inss
from tests.support.console_app import INSS, SITE_A, SITE_B, console_site, csrf_of, login


@pytest.fixture
def site(tmp_path: Path):
    with console_site(tmp_path) as found:
        yield found


def _form(c, **fields):  # type: ignore[no-untyped-def]
    return {"csrf_token": csrf_of(c.get("/workers/").data), **fields}


def _flashes(page: str) -> list[str]:
    return re.findall(r'class="flash[^"]*"[^>]*>([^<]*)<', page)


def _actions(db) -> list[str]:  # type: ignore[no-untyped-def]
    return [row[3] for row in db.console_audit()]


def _listing(db, tmp_path: Path, workplace: str | None = None):  # type: ignore[no-untyped-def]
    return {w.name: w for w in Registry(db, tmp_path / "inss.key").listing(workplace)}


def test_a_site_manager_adds_a_worker_to_their_worksite_only(site, tmp_path: Path) -> None:
    app, db, _clock = site
    c, _answer = login(app, "manager-a")
    worker = {"inss": make_inss(40), "name": "Dirk Maes", "employer": make_enterprise(2),
              "capacity": "employee", "badge": "nfc-a:0D0D0D0D"}  # fmt: skip
    c.post("/workers/add", data=_form(c, **worker, workplace=SITE_A))
    added = _listing(db, tmp_path, SITE_A)["Dirk Maes"]
    assert added.badges == [("nfc-a:0D0D0D0D", True)]
    assert "worker.add" in _actions(db)
    refused = c.post("/workers/add", data=_form(c, **{**worker, "name": "Eva"}, workplace=SITE_B),
                     follow_redirects=True)  # fmt: skip
    assert "not one of your worksites" in refused.data.decode()
    assert "Eva" not in _listing(db, tmp_path)


def test_a_bad_row_is_refused_with_the_cli_reason_and_no_inss(site, tmp_path: Path) -> None:
    app, db, _clock = site
    c, _answer = login(app, "admin")
    bad_inss = INSS[:-1] + str((int(INSS[-1]) + 1) % 10)
    answer = c.post("/workers/add", follow_redirects=True, data=_form(
        c, inss=bad_inss, name="Wrong Digits", employer=make_enterprise(2), capacity="employee",
        workplace=SITE_A))  # fmt: skip
    page = answer.data.decode()
    assert "inss:" in page
    assert bad_inss not in page
    assert "Wrong Digits" not in _listing(db, tmp_path)


def test_a_semicolon_csv_imports_good_rows_and_reports_bad_ones(site, tmp_path: Path) -> None:
    app, db, _clock = site
    c, _answer = login(app, "manager-a")
    good = make_enterprise(3)
    bad_check_digits = good[:-2] + f"{(int(good[-2:]) + 1) % 97:02d}"
    text = (
        "inss;name;employer;capacity;badge\n"
        f"{make_inss(50)};Fien Claes;{make_enterprise(3)};employee;nfc-a:0E0E0E0E\n"
        f"{make_inss(51)};Gert Wouters;{bad_check_digits};employee;\n"
        f"{make_inss(52)};Hanne Smet;{make_enterprise(3)};student;\n"
    )
    answer = c.post("/workers/import", follow_redirects=True, data=_form(
        c, workplace=SITE_A, file=(io.BytesIO(text.encode()), "workers.csv")))  # fmt: skip
    page = answer.data.decode()
    assert "2 worker(s) imported, 1 row(s) rejected" in page, _flashes(page)
    assert "line 3" in page
    assert make_inss(51) not in page
    on_site = _listing(db, tmp_path, SITE_A)
    assert {"Fien Claes", "Hanne Smet"} <= set(on_site)
    assert "Gert Wouters" not in on_site


def test_block_unblock_link_and_remove_are_audited(site, tmp_path: Path) -> None:
    app, db, _clock = site
    c, _answer = login(app, "manager-a")
    c.post("/workers/badges/nfc-a:0A0A0A0A/block", data=_form(c))
    assert _listing(db, tmp_path)["Ana Peeters"].badges == [("nfc-a:0A0A0A0A", False)]
    c.post("/workers/badges/nfc-a:0A0A0A0A/unblock", data=_form(c))
    c.post("/workers/w-ana/link", data=_form(c, badge="nfc-a:0C0C0C0C"))
    assert sorted(_listing(db, tmp_path)["Ana Peeters"].badges) == [
        ("nfc-a:0A0A0A0A", True), ("nfc-a:0C0C0C0C", True)]  # fmt: skip
    # Ana has taps not yet registered with the NSSO: the registry refuses her removal
    answer = c.post("/workers/w-ana/remove", data=_form(c), follow_redirects=True)
    assert "not yet registered" in answer.data.decode()
    actions = _actions(db)
    for action in ("badge.block", "badge.unblock", "badge.link"):
        assert action in actions


def test_a_site_manager_cannot_touch_another_worksites_worker(site, tmp_path: Path) -> None:
    app, db, _clock = site
    Registry(db, tmp_path / "inss.key").add_worker(
        "w-zoe", "Zoe B", inss=make_inss(60), employer=make_enterprise(4)
    )
    Registry(db, tmp_path / "inss.key").assign("w-zoe", SITE_B)
    c, _answer = login(app, "manager-a")
    assert "Zoe B" not in c.get("/workers/").data.decode()
    assert c.get(f"/workers/?worksite={SITE_B}").status_code == 404
    assert c.post("/workers/w-zoe/remove", data=_form(c)).status_code == 404
    assert "Zoe B" in _listing(db, tmp_path)
