"""Belgian time for people: the days of reports and exports, and times written with their
offset. Machines get nanoseconds since the epoch (UTC) alongside."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

SITE_TIME = ZoneInfo("Europe/Brussels")


def local(wall_ns: int) -> datetime:
    """The instant ``wall_ns`` in Belgian time."""
    return datetime.fromtimestamp(wall_ns / 1e9, tz=UTC).astimezone(SITE_TIME)


def local_iso(wall_ns: int | None) -> str | None:
    """ISO 8601 with milliseconds and the offset (``2026-11-03T07:00:00.000+01:00``)."""
    return None if wall_ns is None else local(wall_ns).isoformat(timespec="milliseconds")


def day_start_ns(day: date) -> int:
    """The first instant of ``day`` in Belgian time, as ns since the epoch."""
    return int(datetime(day.year, day.month, day.day, tzinfo=SITE_TIME).timestamp()) * 10**9
