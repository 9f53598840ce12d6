"""Test helper: a clock whose sleeps take no time, to compress hours into seconds.

:class:`CompressedClock` reads as wall time plus everything slept so far: real work still takes
real time, but a wait (a backoff, a Retry-After, an idle loop) moves the clock forward at once.
Hand ``now``/``ns``/``sleep`` to the simulator, the client and the relay so they share it.
"""

from __future__ import annotations

import threading
import time


class CompressedClock:
    """Wall time plus the sum of every sleep (seconds since the epoch)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skipped = 0.0

    def now(self) -> float:
        with self._lock:
            return time.time() + self._skipped

    def ns(self) -> int:
        return int(self.now() * 1e9)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._skipped += max(0.0, seconds)

    @property
    def skipped_s(self) -> float:
        with self._lock:
            return self._skipped


class ManualClock:
    """Seconds that move only when the test moves them (``clock.now += 60``): for code that
    takes a ``Callable[[], float]`` clock, such as :class:`siteclock.waits.WaitReporter`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
