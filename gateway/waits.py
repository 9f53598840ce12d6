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

import socket
import ssl
import threading
from collections.abc import Callable

from siteclock.gateway.config import MqttConfig
from siteclock.waits import Wait, WaitReporter

__all__ = ["ClockHolds", "Wait", "WaitReporter", "diagnose_broker"]


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


class ClockHolds:
    """Taps the relay holds because their terminal's clock was not synchronised (issue 11,
    Seen 6: they used to wait ten minutes in silence). Per terminal, a WARNING at once and
    again every ``report_every_s`` while its taps are held, then one line when a tap of it
    goes again. ``clock`` is the relay's, in seconds."""

    def __init__(
        self, hold_s: float, *, report_every_s: float = 60.0, clock: Callable[[], float]
    ) -> None:
        self.hold_s = hold_s
        self.report_every_s = report_every_s
        self._clock = clock
        self._reporters: dict[str, WaitReporter] = {}
        self._lock = threading.Lock()  # the relay notes, the gateway's status reads

    def note(self, terminal: str, held: bool) -> None:
        with self._lock:
            self._note(terminal, held)

    def _note(self, terminal: str, held: bool) -> None:
        reporter = self._reporters.get(terminal)
        if not held:
            if reporter is not None:
                reporter.update(None)
                del self._reporters[terminal]
            return
        if reporter is None:
            reporter = self._reporters[terminal] = WaitReporter(
                "gateway holding taps for a clock sync",
                report_every_s=self.report_every_s,
                clock=self._clock,
            )
        reporter.update(
            Wait(
                f"terminal {terminal}'s clock is not synchronised: its taps wait for a sync "
                f"point of the same boot to be dated from, each at most {self.hold_s:.0f} s "
                "([relay] unsynced_hold_s), then go with the terminal's own time",
                f"check time sync on {terminal} (its status: clock, waiting_for); nothing is "
                "lost meanwhile",
            )
        )

    def waiting(self) -> list[str]:
        """Terminals whose taps are held now, each with how long."""
        with self._lock:
            held = sorted(self._reporters.items())
        return [f"{t}: taps held for a clock sync for {r.waited_s():.0f} s" for t, r in held]
