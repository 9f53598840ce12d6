"""When a terminal stops saying "saved": its own broker login has been refused for a while.

Decommissioning a terminal (``siteclock provision decommission``) disables it at the gateway,
which then refuses its events, and removes its broker account. The terminal is not told in
any other way; what it sees is the broker refusing its user name and password. A terminal that
kept answering "saved" would send workers home believing they were registered.

:class:`LoginWatch` calls the terminal out of service when the broker has refused this
terminal's login (bad user name or password, not authorised) continuously for ``after_s``
seconds, and only if these credentials were accepted once before (a marker file in the data
directory remembers it across restarts): a terminal that never logged in has a configuration
problem, not a decommission, and keeps recording. One accepted login ends it at once.

While out of service the terminal refuses taps visibly (red, "NOT SAVED / OUT OF SERVICE / use
other terminal"): the gateway would refuse them anyway, and nothing is recorded that a worker
believes was sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from siteclock.log import fields

log = logging.getLogger(__name__)

LOGIN_REFUSALS = ("bad user name or password", "not authorized")
"""MQTT v5 CONNACK reasons (as paho-mqtt names them) that refuse the credentials themselves."""

DEFAULT_AFTER_S = 300.0
MARKER = "broker-login-accepted"


class LoginWatch:
    """Whether this terminal's broker login has been refused long enough (see module doc)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        after_s: float = DEFAULT_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.marker = Path(data_dir) / MARKER
        self.after_s = after_s
        self.clock = clock
        self._refused_since: float | None = None
        self._refusals_seen = 0
        self._logins_seen = 0
        self._announced = False

    def observe(self, *, logins: int, connected: bool, refusals: int, reason: str | None) -> None:
        """Feed the uplink's counts: logins the broker accepted so far, whether it is connected
        now, logins it refused so far, and the reason of the last refusal. Counts, not
        snapshots: a login accepted and lost between two looks still counts."""
        if logins > self._logins_seen or connected:
            self._logins_seen = logins
            if not self.marker.exists():
                self.marker.touch(mode=0o600)
            if self._refused_since is not None and connected:
                log.info("broker accepts this terminal again: back in service")
            if connected:
                self._refused_since, self._announced = None, False
                self._refusals_seen = refusals
                return
        if refusals <= self._refusals_seen:
            return
        self._refusals_seen = refusals
        if (reason or "").strip().lower() not in LOGIN_REFUSALS:
            self._refused_since = None  # the broker is busy or unwell: not about this terminal
            return
        if self._refused_since is None:
            self._refused_since = self.clock()

    def out_of_service(self) -> bool:
        if self._refused_since is None or not self.marker.exists():
            return False
        out = self.clock() - self._refused_since >= self.after_s
        if out and not self._announced:
            self._announced = True
            log.error(
                "broker refuses this terminal's login: decommissioned? taps are refused until "
                "it is accepted again",
                extra=fields(refused_for_s=round(self.clock() - self._refused_since)),
            )
        return out
