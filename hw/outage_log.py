"""Keep the log of an unplugged reader short: one line when it goes, a summary now and then,
one line when it is back.

A reader that is unplugged for a weekend is retried several times a second, and nfcpy logs an
ERROR line for each failed open of a ``tty:`` or ``usb`` path: two lines a second fill an SD
card. While an outage lasts, :class:`OutageLog` counts the attempts and the driver's ERROR lines
instead of printing them, and writes a summary every ``summary_interval_s``.

Example::

    outage = OutageLog("tty:AMA0:pn532", log, summary_interval_s=600)
    outage.failed("no reader at ...; check that it is plugged in")   # one WARNING line
    outage.failed("no reader at ...")                                # counted
    outage.recovered()   # "reader tty:AMA0:pn532 is back after 12 s (40 attempts, ...)"
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DRIVER_LOGGERS = "nfc"
"""nfcpy's loggers (``nfc.clf``, ``nfc.clf.pn532``, ...) are all below this name."""


class OutageLog(logging.Filter):
    """Rate-limits what is logged while a reader is unavailable.

    It is also a :class:`logging.Filter`: :meth:`attach` puts it on nfcpy's loggers, where it
    drops (and counts) their lines above DEBUG during an outage and lets everything through
    otherwise.
    Several readers in one process each filter nfcpy's lines during their own outages; nfcpy's
    lines do not say which device they are about.

    :param name: the reader's name, as logs show it.
    :param logger: where the three kinds of line go.
    :param summary_interval_s: seconds between two summaries of one outage.
    :param clock: monotonic seconds; tests pass a compressed clock.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        summary_interval_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.name_ = name
        self.log = logger
        self.summary_interval_s = summary_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._summary_at = 0.0
        self._attempts = 0
        self._suppressed = 0
        self._attached: list[logging.Logger] = []

    @property
    def down(self) -> bool:
        with self._lock:
            return self._since is not None

    @property
    def suppressed(self) -> int:
        """Driver lines (INFO and above) dropped during the current (or last) outage."""
        with self._lock:
            return self._suppressed

    def failed(self, detail: str) -> None:
        """One more failed attempt to open or use the reader; ``detail`` names cause and fix."""
        now = self._clock()
        with self._lock:
            self._attempts += 1
            if self._since is None:
                self._since, self._summary_at = now, now + self.summary_interval_s
                self._attempts, self._suppressed = 1, 0
                first = True
            elif now >= self._summary_at:
                self._summary_at = now + self.summary_interval_s
                first = False
            else:
                return
            since, attempts, suppressed = self._since, self._attempts, self._suppressed
        if first:
            if self._attached:
                self.attach()  # driver modules loaded since (nfcpy imports some lazily)
            self.log.warning("reader %s: %s", self.name_, detail)
        else:
            self.log.warning(
                "reader %s still unavailable after %.0f s (%d attempts, %d driver lines not "
                "shown): %s",
                self.name_,
                now - since,
                attempts,
                suppressed,
                detail,
            )

    def recovered(self) -> None:
        """The reader works again: say so once, with what the outage cost."""
        now = self._clock()
        with self._lock:
            since, self._since = self._since, None
            attempts, suppressed = self._attempts, self._suppressed
        if since is None:
            self.log.info("reader %s is ready", self.name_)
        else:
            self.log.warning(
                "reader %s is back after %.0f s (%d attempts, %d driver lines not shown)",
                self.name_,
                now - since,
                attempts,
                suppressed,
            )

    # ------------------------------------------------------------------ the driver's lines

    def filter(self, record: logging.LogRecord) -> bool:
        # nfcpy also logs "searching for reader on path ..." (INFO) at every attempt; only
        # its DEBUG lines, off unless someone is debugging the driver, pass during an outage.
        if record.levelno < logging.INFO:
            return True
        with self._lock:
            if self._since is None:
                return True
            self._suppressed += 1
            return False

    def attach(self) -> None:
        """Filter nfcpy's loggers (a logger's filters do not see its children's records, so
        each of nfcpy's loggers gets it)."""
        manager = logging.Logger.manager
        for name in [DRIVER_LOGGERS, *list(manager.loggerDict)]:
            if name == DRIVER_LOGGERS or name.startswith(DRIVER_LOGGERS + "."):
                logger = logging.getLogger(name)
                if logger not in self._attached:
                    logger.addFilter(self)
                    self._attached.append(logger)

    def detach(self) -> None:
        for logger in self._attached:
            logger.removeFilter(self)
        self._attached.clear()
