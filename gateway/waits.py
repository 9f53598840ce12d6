"""What the gateway is waiting for, found out and said loudly until it is over.

A gateway with a wrong broker host, port, CA or password used to log "running" and then
nothing. Now, while the broker link is down, :func:`diagnose_broker` finds the cause from the
outside (name lookup, TCP, TLS handshake, then the broker's own refusal of the login) and
:class:`WaitReporter` logs it as a WARNING at once and again every ``report_every_s`` with how
long it has lasted and the next step, then one INFO line when the wait is over. ``siteclock
gateway check`` (:mod:`gateway.selftest`) reports the same causes and exits non-zero.

Example::

    reporter = WaitReporter("gateway waiting for the broker", report_every_s=30)
    reporter.update(diagnose_broker(cfg.mqtt, link.last_refusal))  # None once connected
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from siteclock.gateway.config import MqttConfig
from siteclock.log import fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wait:
    """One thing a service waits for: the cause, and what a person can do about it."""

    cause: str
    next_step: str


def diagnose_broker(cfg: MqttConfig, refusal: str | None, *, timeout_s: float = 3.0) -> Wait:
    """Why the gateway cannot use the broker at ``cfg.host:cfg.port``, checked step by step."""
    where = f"{cfg.host}:{cfg.port}"
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=timeout_s)
    except socket.gaierror as exc:
        return Wait(
            f"cannot resolve the broker host {cfg.host!r}: {exc.strerror or exc}",
            "fix [mqtt] host in the gateway's config (the broker's name or address)",
        )
    except OSError as exc:
        return Wait(
            f"nothing answers at {where}: {exc.strerror or exc}",
            "start the broker (systemctl status mosquitto) and check [mqtt] host and port: "
            "the port is the broker's gateway listener (broker-config --gateway-port, "
            "default 8884), not the terminals' 8883",
        )
    with sock:
        if cfg.tls:
            context = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file is not None else None
            )
            try:
                with context.wrap_socket(sock, server_hostname=cfg.host):
                    pass
            except (ssl.SSLError, OSError) as exc:
                return Wait(
                    f"TLS with the broker at {where} failed: {exc}",
                    "[mqtt] ca_file must be the site CA (<broker dir>/pki/ca.pem) and [mqtt] "
                    "host a name the broker's certificate holds (broker-config --hostname)",
                )
    if refusal:
        return Wait(
            f"the broker at {where} refuses the gateway's login: {refusal}",
            "[mqtt] password_file must hold the password broker-config wrote for "
            "siteclock_gateway (<broker dir>/credentials/), and the broker must have been "
            "reloaded since (systemctl reload mosquitto)",
        )
    return Wait(
        f"the broker at {where} answers but the gateway is not connected yet",
        "wait a few seconds; if it lasts, read the broker's log (journalctl -u mosquitto)",
    )


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
