"""How the intake says no: every refusal counted by reason, the first ones (then one in a
thousand) logged with the terminal id and seq only (no payload, no personal data), refused
events charged to the terminal's budget, and a terminal over its budget reported as a security
alert at most once a minute."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from siteclock.gateway.intake_limits import LOG_FIRST_PER_REASON, RATE_ALERT_EVERY_S, RATE_LIMITED
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.store import Inbox
from siteclock.log import fields

log = logging.getLogger(__name__)


class Refusals:
    def __init__(self, budget: TerminalBudget, inbox: Inbox, clock: Callable[[], float]) -> None:
        self.counters: Counter[str] = Counter()
        """Every event or message that did not become a new inbox row, by reason."""
        self.budget = budget
        self.inbox = inbox
        self.clock = clock
        self._rate_alerted: dict[str, float] = {}
        self.on_refusal: Callable[[str | None, str], None] | None = None
        """Told of every refusal (terminal, reason): the per-terminal counts of the console."""

    def refuse(self, reason: str, terminal: str | None, seq: int | None = None) -> None:
        """Count a refused event or events message and charge it to the terminal's budget."""
        self.reject(reason, terminal, seq)
        if terminal:
            self.budget.charge(terminal, 1)

    def reject(self, reason: str, terminal: str | None, seq: int | None = None) -> None:
        """Count (and maybe log) a refusal without charging the budget."""
        self.counters[reason] += 1
        if self.on_refusal is not None:
            self.on_refusal(terminal, reason)
        n = self.counters[reason]
        if n <= LOG_FIRST_PER_REASON or n % 1000 == 0:
            log.warning(
                "event refused",
                extra=fields(reason=reason, terminal=terminal or "-", seq=seq or "-", count=n),
            )

    def rate_limited(self, terminal: str, what: str) -> None:
        """Count a message dropped for a terminal over its budget; alert at most once a minute."""
        self.reject(RATE_LIMITED, terminal)
        now = self.clock()
        last = self._rate_alerted.get(terminal)
        if last is not None and now - last < RATE_ALERT_EVERY_S:
            return
        self._rate_alerted[terminal] = now
        log.error(
            "SECURITY: terminal over its intake budget; its messages are dropped unread",
            extra=fields(terminal=terminal, budget=what),
        )
        self.inbox.record_alert(terminal, 0, RATE_LIMITED, what, at_ns=time.time_ns())
