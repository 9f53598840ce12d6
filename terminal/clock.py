"""How far the terminal's wall clock can be trusted, read without privileges and without waiting.

A terminal without a real-time clock may boot with the time timesyncd saved at shutdown, hours
or days old. It must still register taps at once (the law wants real time, and NTP may be out
of reach), so every event carries the clock's trust as data instead (DESIGN decision 4):

* ``read_clock()`` asks the kernel through ``adjtimex(modes=0)`` (unprivileged, one syscall)
  for ``maxerror`` and applies systemd's own rule (``ntp_synced()`` in ``time-util.c``):
  synced when maxerror is below 16 s, ignoring ``STA_UNSYNC``. When the call is not available
  it falls back to timesyncd's ``/run/systemd/timesync/synchronized`` flag file, and else says
  ``unknown``.
* ``boot_id()``, ``boot_ns()`` and ``wall_ns()`` give the other three stamps an event carries;
  a later sync in the same boot lets the gateway correct an unsynced event
  (``t = sync_wall - (sync_boot - event_boot)``).

The clock state is cached for :data:`CACHE_NS` so a burst of taps pays one syscall, not one each,
except across a step of the wall clock (:class:`StepWatch`), which capture also flags on the tap
(``clock_stepped``) so the employer sees why its time may differ from the worker's memory.

Example::

    state = read_clock()         # ClockState(synced=True, maxerror_us=24000, source="adjtimex")
    stamp = (wall_ns(), boot_id(), boot_ns())
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from functools import cache
from pathlib import Path

from siteclock.protocol import ClockState

SYNC_LIMIT_US = 16_000_000
"""systemd's rule: the kernel's maxerror below 16 s means the clock is synchronised."""

SYNC_FLAG = Path("/run/systemd/timesync/synchronized")
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
CACHE_NS = 1_000_000_000
"""How long one clock reading is reused. Sync state changes over minutes, taps come in bursts."""


class _Timex(ctypes.Structure):
    """The head of the kernel's ``struct timex``: only the fields before ``time`` are read.

    ``long`` follows the platform (32 bits on armhf, 64 on aarch64/x86-64), as in the kernel;
    the padding keeps room for the rest of the structure, whatever its exact layout.
    """

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


@cache
def _libc_adjtimex() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.adjtimex
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.POINTER(_Timex)]
    func.restype = ctypes.c_int
    return func


def _from_adjtimex() -> ClockState | None:
    func = _libc_adjtimex()
    if func is None:
        return None
    tx = _Timex()  # modes=0: read only, needs no privilege
    if func(ctypes.byref(tx)) < 0:
        return None
    maxerror = int(tx.maxerror)
    return ClockState(synced=maxerror < SYNC_LIMIT_US, maxerror_us=maxerror, source="adjtimex")


def _from_timesyncd() -> ClockState | None:
    try:
        if SYNC_FLAG.exists():
            return ClockState(synced=True, maxerror_us=-1, source="timesyncd")
    except OSError:
        return None
    return None


def read_clock_uncached() -> ClockState:
    """Ask the kernel (then timesyncd) now. Never blocks, never raises."""
    return (
        _from_adjtimex()
        or _from_timesyncd()
        or ClockState(synced=False, maxerror_us=-1, source="unknown")
    )


STEP_TOLERANCE_NS = 1_000_000_000
"""How far the wall clock may move against the boot clock, plus :data:`SLEW_PER_NS` of the time
between two readings (what NTP slewing can do), before it counts as a step."""
SLEW_PER_NS = 0.001  # the kernel slews at most 500 ppm; twice that is still no step


class StepWatch:
    """Notices the wall clock stepping (forward or back) against the boot clock.

    ``wall - boot`` stays put while the clock runs (NTP only slews it by parts per million);
    a step (``date -s``, an NTP step on first sync, a bad RTC read) moves it at once. The boot
    clock is immune, which is what lets the gateway correct a tap later (DESIGN decision 4).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None  # (boot_ns, wall - boot)

    def stepped(self, wall: int, boot: int) -> bool:
        """Whether the clock stepped since the previous call (False on the first one)."""
        offset = wall - boot
        with self._lock:
            last, self._last = self._last, (boot, offset)
        if last is None:
            return False
        allowed = STEP_TOLERANCE_NS + SLEW_PER_NS * max(0, boot - last[0])
        return abs(offset - last[1]) > allowed


_cache_lock = threading.Lock()
_cached: tuple[int, ClockState] | None = None
_cache_steps = StepWatch()


def read_clock() -> ClockState:
    """The clock's trust now, reused for up to :data:`CACHE_NS` (a tap must stay cheap), but
    read again at once when the clock stepped: a step makes the kernel drop its sync (it sets
    maxerror to 16 s), and the tap right after must not borrow the trust from before it."""
    global _cached
    now = time.monotonic_ns()
    stepped = _cache_steps.stepped(wall_ns(), boot_ns())
    with _cache_lock:
        if _cached is not None and now - _cached[0] < CACHE_NS and not stepped:
            return _cached[1]
    state = read_clock_uncached()
    with _cache_lock:
        _cached = (now, state)
    return state


@cache
def boot_id() -> str:
    """This boot's random id: boot-time stamps are only comparable within one boot."""
    try:
        return BOOT_ID_FILE.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def boot_ns() -> int:
    """Nanoseconds since boot, counting suspend (``CLOCK_BOOTTIME``), immune to clock steps."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def wall_ns() -> int:
    """The wall clock in nanoseconds since the epoch, as trusted as :func:`read_clock` says."""
    return time.time_ns()
