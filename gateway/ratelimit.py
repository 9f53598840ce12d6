"""Per-terminal budgets: how much of the intake's work one terminal may cost per second.

A token bucket per terminal. The intake asks :meth:`TerminalBudget.allow` before it decodes a
terminal's message and charges what turned out to be wasted work: refused events, bad messages
(and a fraction for duplicates). Good events cost nothing, so an honest terminal draining a
backlog never runs dry, while one sending junk signatures, replays or garbage is held to
:attr:`rate` per second after a burst of :attr:`burst`. The balance may go negative (a whole
group's refusals are charged at once); the terminal then waits until it is back above one.

Example::

    budget = TerminalBudget(rate=50, burst=200)
    if budget.allow("t-a"):
        ...
        budget.charge("t-a", refused)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class TerminalBudget:
    """Token buckets by terminal id; used by one thread (the intake's worker)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, terminal: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(terminal)
        if bucket is None:
            bucket = self._buckets[terminal] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def allow(self, terminal: str) -> bool:
        """True while the terminal has at least one token left."""
        return self._bucket(terminal).tokens >= 1

    def charge(self, terminal: str, amount: float) -> None:
        self._bucket(terminal).tokens -= amount

    def tokens(self, terminal: str) -> float:
        return self._bucket(terminal).tokens
