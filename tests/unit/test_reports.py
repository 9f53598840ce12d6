"""Presence per worker, worksite and day from the gateway's decided taps; CSV for payroll."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.registry import Registry
from siteclock.gateway.reports import presence, presence_csv
from siteclock.gateway.site_time import day_start_ns
from tests.support.ciao import make_enterprise, make_inss

SITE, OTHER = "1Y101DRUNWB5Z", "2Z202DRUNWB5Z"
NOV_3 = day_start_ns(date(2026, 11, 3))
H, M = 3600 * 10**9, 60 * 10**9


@pytest.fixture
def db(tmp_path: Path) -> SQLiteGatewayDB:
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    registry = Registry(db, tmp_path / "inss.key")
    registry.add_worker("w-an", "An Peeters", inss=make_inss(1), employer=make_enterprise(1))
    registry.add_worker("w-bo", "Bo Claes", inss=make_inss(2), employer=make_enterprise(1))
    seq = 0

    def tap(worker: str, at: int, ciao_type: str, kind: str = "", site: str = SITE,
            issues: str = "") -> None:  # fmt: skip
        nonlocal seq
        seq += 1
        db.record_decisions([("t-1", seq, site, worker, NOV_3 + at, kind or ciao_type,
                              ciao_type, issues, 1)])  # fmt: skip

    tap("w-an", 7 * H, "in")
    tap("w-an", 12 * H, "out", "break_start")
    tap("w-an", 12 * H + 30 * M, "in", "break_end")
    tap("w-an", 16 * H, "out")
    tap("w-an", 24 * H + 8 * H, "in")  # the next day: no out (forgotten)
    tap("w-bo", 22 * H, "in")  # a night shift, over midnight
    tap("w-bo", 30 * H, "out")
    tap("w-an", 9 * H, "in", site=OTHER)  # another worksite the same day
    tap("w-an", 10 * H, "out", site=OTHER)
    yield db
    registry.close()
    db.close()


def test_a_day_with_a_break_gives_first_in_last_out_and_hours(db: SQLiteGatewayDB) -> None:
    days = presence(db, NOV_3, NOV_3 + 3 * 24 * H, workplace=SITE)
    first = next(d for d in days if d.worker_ref == "w-an" and d.day == date(2026, 11, 3))
    assert (first.first_in_ns, first.last_out_ns) == (NOV_3 + 7 * H, NOV_3 + 16 * H)
    assert (first.breaks, first.break_ns) == (1, 30 * M)
    assert first.hours == pytest.approx(8.5)
    assert not first.open


def test_a_forgotten_out_leaves_the_day_open_and_uncounted(db: SQLiteGatewayDB) -> None:
    days = presence(db, NOV_3, NOV_3 + 3 * 24 * H, worker_ref="w-an", workplace=SITE)
    second = next(d for d in days if d.day == date(2026, 11, 4))
    assert second.open
    assert second.worked_ns == 0


def test_a_night_shift_counts_on_the_day_it_began(db: SQLiteGatewayDB) -> None:
    [night, morning] = presence(db, NOV_3, NOV_3 + 3 * 24 * H, worker_ref="w-bo")
    assert night.day == date(2026, 11, 3)
    assert night.hours == pytest.approx(8)
    assert morning.day == date(2026, 11, 4)
    assert (morning.first_in_ns, morning.worked_ns) == (None, 0)
    assert morning.last_out_ns == NOV_3 + 30 * H


def test_worksites_are_reported_apart_and_the_csv_is_for_a_spreadsheet(
    db: SQLiteGatewayDB,
) -> None:
    days = presence(db, NOV_3, NOV_3 + 24 * H, worker_ref="w-an")
    assert {(d.workplace, d.hours) for d in days} == {(SITE, 8.5), (OTHER, 1.0)}
    text = presence_csv(days, delimiter=";")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    site_row = next(r for r in rows if r["workplace"] == SITE)
    assert site_row == {
        "date": "2026-11-03", "workplace": SITE, "worker_ref": "w-an",
        "worker_name": "An Peeters", "first_in": "07:00", "last_out": "16:00", "hours": "8.50",
        "breaks": "1", "break_minutes": "30", "open": "", "issues": "",
    }  # fmt: skip
