"""Saying loudly, and again while it lasts, what a service waits for.

A wait (the broker unreachable, a clock not synchronised, rosters refused) is a
:class:`Wait`: its cause and the next step a person can take. :class:`WaitReporter` logs it as
a WARNING at once, again every ``report_every_s`` while it lasts, whatever the polling rate
(one line per period, never one per poll: an SD card must not fill), with how long it has
lasted, and once at INFO when it is over. The gateway (:mod:`gateway.waits`) and the terminal
(:mod:`terminal.health`) use it.

Example::

    reporter = WaitReporter("gateway waiting for the broker", report_every_s=30)
    reporter.update(Wait("nothing answers at localhost:8884", "start the broker"))
    reporter.update(None)   # over: one INFO line with how long it lasted
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from siteclock.log import fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wait:
    """One thing a service waits for: the cause, and what a person can do about it."""

    cause: str
    next_step: str


class WaitReporter:
    """Logs a wait at once, again every ``report_every_s`` while it lasts (rate-limited: one
    line per period, whatever the polling rate), and once when it is over."""

    def __init__(
        self,
        what: str,
        *,
        report_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.what = what
        self.report_every_s = report_every_s
        self._clock = clock
        self._log = logger
        self.current: Wait | None = None
        self.since: float | None = None
        self._last_report: float | None = None

    def waited_s(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def update(self, wait: Wait | None) -> None:
        now = self._clock()
        if wait is None:
            if self.since is not None:
                self._log.info(
                    f"{self.what}: over",
                    extra=fields(waited_s=round(now - self.since, 1)),
                )
            self.current = self.since = self._last_report = None
            return
        if self.since is None:
            self.since = now
        changed = self.current is None or wait.cause != self.current.cause
        self.current = wait
        due = self._last_report is None or now - self._last_report >= self.report_every_s
        if changed or due:
            self._last_report = now
            self._log.warning(
                self.what,
                extra=fields(
                    cause=wait.cause, waited_s=round(now - self.since, 1), next=wait.next_step
                ),
            )
