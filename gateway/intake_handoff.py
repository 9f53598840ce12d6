"""From paho's network thread to the intake's worker: received messages, bounded, in order."""

from __future__ import annotations

import threading
from collections import deque

Received = tuple[str, bytes, int, int]
"""One message as the worker needs it: topic, payload, mid, qos (not paho's MQTTMessage,
which holds a lock, a condition and MQTT 5 properties per message)."""


class Handoff:
    """Messages from paho's network thread to the worker: in arrival order, bounded.

    The worker takes everything waiting (up to a group) in one call, so a hundred messages cost
    one lock round trip, not a hundred as with :class:`queue.Queue`."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Received] = deque()
        self._limit = limit
        self._cond = threading.Condition()

    def put(self, item: Received, stopping: threading.Event) -> bool:
        """Append, waiting while full; False if the intake stopped first (the message is then
        not acknowledged, so the broker delivers it again)."""
        with self._cond:
            while len(self._items) >= self._limit:
                if stopping.is_set():
                    return False
                self._cond.wait(0.2)
            self._items.append(item)
            if len(self._items) == 1:
                self._cond.notify()  # the worker may be waiting for the first one
        return True

    def take(self, most: int, timeout: float) -> list[Received]:
        """Up to ``most`` messages, oldest first; waits up to ``timeout`` for the first."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items = self._items
            group = [items.popleft() for _ in range(min(most, len(items)))]
            if group:
                self._cond.notify()  # the network thread may be waiting for room
        return group

    def __len__(self) -> int:
        return len(self._items)
