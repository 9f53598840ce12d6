"""The gateway's watch loop: the terminals' health sweeper, then the alert rules and the
delivery of their news, each at its own pace, on one thread. Nothing here blocks the intake:
the sweeper and the rules only read and write the gateway database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.alerts.delivery import AlertDelivery, AppriseChannel
from siteclock.gateway.alerts.rules import AlertRules
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.log import fields

log = logging.getLogger(__name__)


class HealthWatch:
    """Sweeps every ``health.config.sweep_s``; evaluates the rules and sends their news every
    ``config.check_s`` (when Apprise URLs are configured). :meth:`turn` runs one round (tests
    drive it with an injected clock; :meth:`start` runs it on a thread)."""

    def __init__(
        self,
        health: TerminalHealth,
        config: AlertConfig,
        *,
        db: GatewayDB | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = health
        self.config = config
        self.clock = clock
        # The rules read the whole fleet each round: on their own connection (``db``) they
        # never hold up the intake, whose heartbeats share the health tracker's.
        rules_db = db or health.db
        self.rules = AlertRules(rules_db, config, clock_ns=health.clock_ns)
        self.channel = AppriseChannel(config.urls)
        self.delivery = AlertDelivery(rules_db, self.channel, config, clock_ns=health.clock_ns)
        self._next_check = 0.0
        self._told = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def turn(self) -> None:
        self.health.sweep()
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.config.check_s
        done = self.rules.evaluate()
        if done.raised or done.resolved:
            log.info(
                "alerts", extra=fields(raised=len(done.raised), resolved=len(done.resolved))
            )
        if self.channel.configured():
            self.delivery.deliver()
        elif self.channel.last_error and self.channel.last_error != self._told:
            # a broken URLs file is said once (and again if it changes), not every round
            log.error("alerts not sent", extra=fields(error=self.channel.last_error))
        self._told = self.channel.last_error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.turn()
            except Exception:  # a failing round must not end the watch: the next one retries
                log.exception("health and alerts round failed; retrying next round")
            self._stop.wait(self.health.config.sweep_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
