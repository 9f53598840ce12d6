"""When a worker's day on a site ends: the shift rule the terminal and the gateway share.

A worker who tapped ``in`` and never ``out`` must not be sent ``out`` the next morning. Both
sides apply the same rule, so the terminal's decision and the gateway's check agree
(docs/direction.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

NS_PER_HOUR = 3600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """When the last ``in`` belongs to an earlier shift.

    ``gap_h``: more than this many hours since the worker's last tap (14 h by default: longer
    than any legal shift, shorter than a night's rest). ``calendar_day``: also when the tap is
    on a later local calendar day than the last one (for sites that never work past midnight).
    """

    gap_h: float = 14.0
    calendar_day: bool = False

    def new_shift(self, last_ns: int, now_ns: int) -> bool:
        if now_ns - last_ns > self.gap_h * NS_PER_HOUR:
            return True
        if self.calendar_day:
            return _local_date(now_ns) > _local_date(last_ns)
        return False


def _local_date(wall_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(wall_ns / 1e9).date()
