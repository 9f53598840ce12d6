"""Login rate limiting: failed logins counted per account name and per client address.

After ``failures`` failed attempts within ``window_s`` for one name, or ``address_failures``
from one address (several names tried from one place; higher, because a site office shares one
address among its people), further logins for that name or from that address are refused
without checking the password until the oldest counted failure leaves the window.
A successful login clears the name's count. Kept in memory: a restart forgets the counts,
which costs an attacker a restart of the server they cannot cause.

Example::

    limit = LoginLimit(failures=5, window_s=900)
    if limit.blocked("an", "10.0.0.7"):
        ...  # 429, "try again in limit.retry_after(...) s"
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class LoginLimit:
    def __init__(
        self, *, failures: int, window_s: float, address_failures: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.failures = failures
        self.address_failures = address_failures or 4 * failures
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._seen[key]
        return times

    def retry_after(self, username: str, remote: str) -> float:
        """Seconds until a login for ``username`` from ``remote`` is tried again; 0: now."""
        with self._lock:
            now = self._clock()
            waits = [
                times[0] + self.window_s - now
                for key, limit in (
                    (f"user:{username}", self.failures),
                    (f"addr:{remote}", self.address_failures),
                )
                if len(times := self._recent(key, now)) >= limit
            ]
        return max(waits, default=0.0)

    def blocked(self, username: str, remote: str) -> bool:
        return self.retry_after(username, remote) > 0

    def failed(self, username: str, remote: str) -> None:
        with self._lock:
            now = self._clock()
            for key in (f"user:{username}", f"addr:{remote}"):
                self._recent(key, now)
                self._seen.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._seen.pop(f"user:{username}", None)
