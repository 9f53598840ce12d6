"""The terminal's heartbeat: one snapshot of everything a remote person needs to trust it.

Health is pushed, not polled (DESIGN decision 7): the uplink publishes :meth:`Health.snapshot`
through ``protocol.encode_status`` as the retained status every ``heartbeat_s``. A snapshot is
cheap (a few index lookups in the outbox, one ``statvfs``, one cached clock read), so it can be
taken as often as wanted.

Alerts are short, stable codes a dashboard can count: ``disk_full`` (a tap was refused),
``disk_low`` (under :data:`DISK_LOW_MB` free), ``reader_fault``, ``roster_refused`` (no
roster can be verified: workers are not greeted, blocked badges not flagged).

What the terminal waits for, ``waiting_for`` in the status (rosters it can verify, a clock
sync: its taps are then flagged and the gateway holds them for a sync point; ``clock`` says
the state itself), is also logged at once, again every :data:`WAIT_REPORT_S` while it lasts
(:class:`siteclock.waits.WaitReporter`), and when it is over.

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
from siteclock.waits import Wait, WaitReporter

DISK_LOW_MB = 50
WAIT_REPORT_S = 60.0
"""How often a lasting wait (clock not synchronised, rosters refused) is logged again."""
CLOCK_NEXT_STEP = (
    "taps are saved at once and flagged clock_unsynced; the gateway holds them for a sync "
    "point (its [relay] unsynced_hold_s, 600 s by default) and then sends them with this "
    "clock's time: check time sync (timedatectl timesync-status) and the network to the NTP "
    "server"
)


class Health:
    """Collects the heartbeat snapshot. Thread-safe: capture, reader and uplink all report.

    :param outbox: the terminal's outbox (queue depth, oldest unsent event).
    :param data_dir: the directory whose free space matters (where the outbox lives).
    :param version: the software version to report.
    :param clock: returns the clock's trust now.
    :param roster_version: returns the version of the roster the terminal holds (None: none
        yet), so the gateway (and whoever waits for a roster to land) can see which it holds.
    :param monotonic: the clock lasting waits are timed and rate-limited with (tests).
    """

    def __init__(
        self,
        outbox: Outbox,
        data_dir: Path,
        *,
        version: str = __version__,
        clock: Callable[[], ClockState] = clock_mod.read_clock,
        roster_version: Callable[[], int | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
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
        self._clock_wait = WaitReporter(
            "terminal clock not synchronised", report_every_s=WAIT_REPORT_S, clock=monotonic
        )
        self._roster_wait = WaitReporter(
            "terminal refuses its rosters", report_every_s=WAIT_REPORT_S, clock=monotonic
        )

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

    def roster_refused(self, problem: Wait | None) -> None:
        """The uplink's callback: why no roster can be applied (``None``: one was applied)."""
        with self._lock:
            self._roster_wait.update(problem)
        self.set_alert("roster_refused", problem is not None)

    def report_waits(self) -> list[str]:
        """Log lasting waits again when due (rate-limited) and return them, each with how long
        it has lasted: the terminal's service calls it on every watchdog turn."""
        state = self._clock()
        with self._lock:
            if state.synced:
                self._clock_wait.update(None)
            else:
                maxerror = (
                    "unknown" if state.maxerror_us < 0 else f"{state.maxerror_us / 1e6:.0f} s"
                )
                self._clock_wait.update(
                    Wait(
                        f"clock not synchronised (max error {maxerror}, from {state.source})",
                        CLOCK_NEXT_STEP,
                    )
                )
            waits = []
            for reporter in (self._clock_wait, self._roster_wait):
                if reporter.current is not None:
                    reporter.update(reporter.current)  # logs again only when due
                    waits.append(f"{reporter.current.cause} (for {reporter.waited_s():.0f} s)")
        return waits

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
        clock = self._clock()
        with self._lock:
            reader = self._reader
            alerts = set(self._alerts)
            waiting = [
                f"{r.current.cause} (for {r.waited_s():.0f} s)"
                for r in (self._clock_wait, self._roster_wait)
                if r.current is not None
            ]
        if free_mb is not None and free_mb < DISK_LOW_MB:
            alerts.add("disk_low")
        return {
            "state": "online",
            "queue_depth": stats.depth,
            "oldest_unsent_age_s": oldest_age,
            "last_seq": stats.last_seq,
            "clock": clock.to_map(),
            "reader": reader,
            "disk_free_mb": free_mb,
            "version": self._version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "boot_id": clock_mod.boot_id(),
            "boot_ns": clock_mod.boot_ns(),
            "wall_ns": wall,
            "alerts": sorted(alerts),
            "roster_version": self._roster_version(),
            "waiting_for": waiting,
        }
