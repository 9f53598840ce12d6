"""The terminal's heartbeat: one snapshot of everything a remote person needs to trust it.

Health is pushed, not polled (DESIGN decision 7): the uplink publishes :meth:`Health.snapshot`
through ``protocol.encode_status`` as the retained status every ``heartbeat_s``. A snapshot is
cheap (a few index lookups in the outbox, one ``statvfs``, one cached clock read), so it can be
taken as often as wanted.

Alerts are short, stable codes a dashboard can count: ``disk_full`` (a tap was refused),
``disk_low`` (under :data:`DISK_LOW_MB` free), ``reader_fault``.

Example::

    health = Health(outbox, data_dir)
    health.set_reader("fault: no answer from PN532; check the cable")
    encode_status(health.snapshot())
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock import __version__
from siteclock.protocol import ClockState
from siteclock.terminal import clock as clock_mod
from siteclock.terminal.outbox import Outbox

DISK_LOW_MB = 50


class Health:
    """Collects the heartbeat snapshot. Thread-safe: capture, reader and uplink all report.

    :param outbox: the terminal's outbox (queue depth, oldest unsent event).
    :param data_dir: the directory whose free space matters (where the outbox lives).
    :param version: the software version to report.
    :param clock: returns the clock's trust now.
    :param roster_version: returns the version of the roster the terminal holds (None: none
        yet), so the gateway (and whoever waits for a roster to land) can see which it holds.
    """

    def __init__(
        self,
        outbox: Outbox,
        data_dir: Path,
        *,
        version: str = __version__,
        clock: Callable[[], ClockState] = clock_mod.read_clock,
        roster_version: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        self._data_dir = Path(data_dir)
        self._version = version
        self._clock = clock
        self._roster_version = roster_version
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._reader = "ok"
        self._alerts: set[str] = set()

    def set_reader(self, state: str) -> None:
        """``"ok"`` or ``"fault: <cause>; <next step>"`` as the reader last reported."""
        with self._lock:
            self._reader = state
        self.set_alert("reader_fault", state != "ok")

    def set_alert(self, name: str, active: bool) -> None:
        with self._lock:
            if active:
                self._alerts.add(name)
            else:
                self._alerts.discard(name)

    def disk_full(self, full: bool) -> None:
        """Capture's callback: a tap was refused for lack of space (True) or saved (False)."""
        self.set_alert("disk_full", full)

    def snapshot(self) -> dict[str, Any]:
        """The status map for ``protocol.encode_status`` (JSON-friendly values only)."""
        stats = self._outbox.stats()
        wall = clock_mod.wall_ns()
        oldest_age = (
            max(0.0, round((wall - stats.oldest_unsent_wall_ns) / 1e9, 1))
            if stats.oldest_unsent_wall_ns is not None
            else None
        )
        try:
            free_mb: float | None = round(shutil.disk_usage(self._data_dir).free / 2**20, 1)
        except OSError:
            free_mb = None
        with self._lock:
            reader = self._reader
            alerts = set(self._alerts)
        if free_mb is not None and free_mb < DISK_LOW_MB:
            alerts.add("disk_low")
        return {
            "state": "online",
            "queue_depth": stats.depth,
            "oldest_unsent_age_s": oldest_age,
            "last_seq": stats.last_seq,
            "clock": self._clock().to_map(),
            "reader": reader,
            "disk_free_mb": free_mb,
            "version": self._version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "boot_id": clock_mod.boot_id(),
            "boot_ns": clock_mod.boot_ns(),
            "wall_ns": wall,
            "alerts": sorted(alerts),
            "roster_version": self._roster_version(),
        }
