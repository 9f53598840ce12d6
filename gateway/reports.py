"""Presence reports for payroll or a social secretariat: per worker, worksite and day, the first
``in``, the last ``out``, the breaks and the hours worked, from the taps the gateway decided.

The source is the sequence check's record (``worker_sequence``): each relayed tap with the
direction sent to the NSSO (``in``/``out``) and its time as relayed (corrected when the
terminal's clock was not synced), across all the site's terminals. Days are Belgian calendar
days. A stretch of work belongs to the day it started (a night shift counts on its first day);
a break is the time between an ``out`` and the next ``in`` on the same day. A day whose last tap
leaves the worker at work is marked ``open`` (a forgotten ``out``): the open stretch is not
counted as hours, and the employer sees it instead of a guess.

Example::

    days = presence(db, from_ns, to_ns, workplace="1Y101DRUNWB5Z")
    text = presence_csv(days)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from typing import Any

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.site_time import local

NS_PER_MINUTE = 60 * 10**9


@dataclass
class DayPresence:
    """One worker's day on one worksite."""

    workplace: str
    worker_ref: str
    name: str
    day: date
    first_in_ns: int | None = None
    last_out_ns: int | None = None
    worked_ns: int = 0
    breaks: int = 0
    break_ns: int = 0
    open: bool = False
    issues: set[str] = field(default_factory=set)

    @property
    def hours(self) -> float:
        return self.worked_ns / 3.6e12


def _worker_days(workplace: str, worker: str, taps: list[Any]) -> list[DayPresence]:
    days: dict[date, DayPresence] = {}

    def day_of(wall_ns: int) -> DayPresence:
        key = local(wall_ns).date()
        if key not in days:
            days[key] = DayPresence(workplace, worker, taps[0]["name"], key)
        return days[key]

    started: int | None = None  # the start of the stretch at work, if at work
    last_out: int | None = None
    for tap in taps:
        wall, day = tap["wall_ns"], day_of(tap["wall_ns"])
        if tap["issues"]:
            day.issues.update(i for i in tap["issues"].split(",") if i)
        if tap["ciao_type"] == "in":
            if started is not None:
                day.issues.add("in_after_in")  # the earlier stretch has no end: not counted
                day_of(started).open = True
            elif last_out is not None and local(last_out).date() == day.day:
                day.breaks += 1
                day.break_ns += wall - last_out
            started = wall
            if day.first_in_ns is None:
                day.first_in_ns = wall
        else:
            if started is None:
                day.issues.add("out_without_in")
            else:
                day_of(started).worked_ns += wall - started
            started, last_out = None, wall
            day.last_out_ns = wall
    if started is not None:
        day_of(started).open = True
    return sorted(days.values(), key=lambda d: d.day)


def presence(
    db: GatewayDB, from_ns: int, to_ns: int, *, workplace: str | None = None,
    worker_ref: str | None = None,
) -> list[DayPresence]:  # fmt: skip
    """Each worker's days in the period, by worksite, worker and day."""
    rows = db.presence_taps(from_ns, to_ns, workplace=workplace, worker_ref=worker_ref)
    found: list[DayPresence] = []
    for (site, worker), taps in groupby(rows, key=lambda r: (r["workplace"], r["worker_ref"])):
        found += _worker_days(site, worker, list(taps))
    return found


CSV_COLUMNS = (
    "date", "workplace", "worker_ref", "worker_name", "first_in", "last_out", "hours",
    "breaks", "break_minutes", "open", "issues",
)  # fmt: skip


def _clock(wall_ns: int | None) -> str:
    return "" if wall_ns is None else local(wall_ns).strftime("%H:%M")


def presence_csv(days: Iterable[DayPresence], *, delimiter: str = ",") -> str:
    """The days as CSV (``;`` for a Belgian spreadsheet): hours as decimals, times as HH:MM."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for d in days:
        writer.writerow([
            d.day.isoformat(), d.workplace, d.worker_ref, d.name, _clock(d.first_in_ns),
            _clock(d.last_out_ns), f"{d.hours:.2f}", d.breaks,
            round(d.break_ns / NS_PER_MINUTE), "yes" if d.open else "",
            " ".join(sorted(d.issues)),
        ])  # fmt: skip
    return out.getvalue()
