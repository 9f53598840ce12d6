"""Test helper: poll a condition that real parts (broker, threads, processes) make true later.

Integration tests cannot know when a real broker has delivered or a real process has written;
they poll. Two shapes, so a test states which it means:

* :func:`wait_until` returns whether the condition held in time, for ``assert wait_until(...),
  context`` where the assertion's message shows the state that did not arrive;
* :func:`wait_for` returns the condition's (truthy) value, or raises ``AssertionError`` naming
  what it waited for.

Timeouts are generous ceilings, not speed targets: a passing test waits only as long as the
condition takes.

Example::

    assert wait_until(lambda: box.stats().depth == 0, timeout=30), uplink.counters
    lines = wait_for(lambda: len(journal()) >= 3 and journal(), "three answers", timeout=10)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.05


def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, *, interval: float = POLL_S
) -> bool:
    """Poll ``predicate`` until it is truthy; False if it is not by ``timeout`` seconds (it is
    asked once more at the deadline, so a condition that just came true still counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_for(
    predicate: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 15.0,
    *,
    interval: float = POLL_S,
) -> T:
    """Poll ``predicate`` until it is truthy and return that value; after ``timeout`` seconds
    raise ``AssertionError("timed out waiting for <what>")``. ``what`` may be a callable, asked
    only on timeout, to name the state that was reached instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


__all__ = ["POLL_S", "wait_for", "wait_until"]
