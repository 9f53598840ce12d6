"""Per-terminal budgets: how much of the intake's work one terminal may cost per second.

A token bucket per terminal. The intake asks :meth:`TerminalBudget.allow` before it decodes a
message and charges its events up front (so one group of messages cannot overspend), then gives
back what turned out to be good work: events stored for the first time. What a terminal is
finally charged is its refused events, duplicates and bad messages. An honest terminal draining
a backlog of thousands of events therefore never runs dry, while one sending junk signatures,
replays or garbage is held to :attr:`rate` per second after a burst of :attr:`burst`.

The balance may go negative (a whole batch is charged even when only a few tokens are left):
that is what bounds the work, to ``burst + rate * t`` plus one batch.

Example::

    budget = TerminalBudget(rate=100, burst=2000)
    if budget.allow("t-a"):
        budget.charge("t-a", len(batch))
        ...
        budget.refund("t-a", stored_new)
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

    def refund(self, terminal: str, amount: float) -> None:
        bucket = self._bucket(terminal)
        bucket.tokens = min(self.burst, bucket.tokens + amount)

    def tokens(self, terminal: str) -> float:
        return self._bucket(terminal).tokens
