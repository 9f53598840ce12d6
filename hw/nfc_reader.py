"""Badge readers driven by nfcpy: a PN532 on a UART, USB readers, nfcpy's ``udp`` test driver.

This is the only module of the project that imports ``nfc``. nfcpy's types, callbacks and
errors stop here: the rest of the terminal sees :class:`~hw.base.BadgeRead` and
:class:`~hw.base.ReaderStatus`, and nfcpy's ``IOError(ENODEV)``, ``FileNotFoundError`` for a
missing libusb or ``Chipset.Error`` become :mod:`hw.errors` types whose text names the cause
and the next step.

Paths are nfcpy's (``tty:AMA0:pn532``, ``usb``, ``usb:054c:06c3``, ``udp:host:port``), plus
``pn532:<serial path>`` for a PN532 behind a path a ``tty:`` spec cannot name, such as a stable
``/dev/serial/by-id/...`` link or a pty.

Example::

    reader = NfcReader("tty:AMA0:pn532")
    for item in reader.reads():  # in the terminal's reader thread
        print(item)              # ReaderStatus(OK), BadgeRead("nfc-a:04A1B2C3D4E5F6", ...)
    reader.close()               # from any thread
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import nfc
import nfc.clf.pn532
import nfc.clf.transport

from siteclock.hw.base import BadgeRead, ReaderItem, ReaderState, ReaderStatus
from siteclock.hw.errors import (
    ReaderAccessDenied,
    ReaderBusy,
    ReaderDriverFailed,
    ReaderDriverMissing,
    ReaderError,
    ReaderGone,
    ReaderNotFound,
)
from siteclock.hw.outage_log import OutageLog

log = logging.getLogger(__name__)

PN532_PREFIX = "pn532:"
TECHNOLOGY = {"A": "nfc-a", "B": "nfc-b", "F": "nfc-f"}
"""The last letter of nfcpy's bitrate/type (``106A``, ``106B``, ``212F``) to a badge prefix."""

FrontendFactory = Callable[[str], Any]
"""``factory(path) -> nfc.ContactlessFrontend`` with a device open; raises when it cannot."""


# --------------------------------------------------------------------------- opening


def pn532_frontend(port: str) -> Any:
    """nfcpy's real ``pn532`` driver on the serial device ``port``, wired by hand.

    This is what nfcpy's ``device.connect()`` does for ``tty:`` paths, minus the search in
    ``/dev``, so it works for any path pyserial can open, without root.
    """
    transport = nfc.clf.transport.TTY(port)
    try:
        device = nfc.clf.pn532.init(transport)
    except BaseException:
        transport.close()
        raise
    device._path = port  # nfcpy reads it back in str(device); connect() sets it the same way
    clf = nfc.ContactlessFrontend()
    clf.device = device
    return clf


def open_frontend(path: str) -> Any:
    """The default factory: ``pn532:<port>`` by hand, anything else through nfcpy's search."""
    if path.startswith(PN532_PREFIX):
        return pn532_frontend(path[len(PN532_PREFIX) :])
    clf = nfc.ContactlessFrontend()
    if not clf.open(path):
        raise ReaderNotFound(
            f"no NFC reader answered at {path!r}; check that it is plugged in, powered, and "
            "that the path and driver name are right"
        )
    return clf


def translate(error: BaseException, path: str) -> ReaderError:
    """An exception from nfcpy (or pyserial, libusb) as the :mod:`hw.errors` type it means."""
    if isinstance(error, ReaderError):
        return error
    if isinstance(error, termios.error) and error.args and isinstance(error.args[0], int):
        # pyserial's flush on a vanished tty raises termios.error, which is no OSError
        error = OSError(error.args[0], os.strerror(error.args[0]))
    if isinstance(error, OSError):
        code = error.errno
        if "libusb" in str(error):
            return ReaderDriverMissing(
                f"libusb-1.0 is not installed, so {path!r} cannot be opened; install the "
                "Debian package libusb-1.0-0"
            )
        if code in (errno.EACCES, errno.EPERM):
            return ReaderAccessDenied(
                f"permission denied opening {path!r}; add the service user to the 'dialout' "
                "group (serial readers) or install the plugdev udev rule (USB readers)"
            )
        if code == errno.EBUSY:
            return ReaderBusy(
                f"{path!r} is held by another program or a kernel driver; stop it, or "
                "blacklist the port100 and pn533_usb kernel modules for USB readers"
            )
        if code in (errno.ENODEV, errno.ENOENT, errno.ENXIO):
            return ReaderNotFound(
                f"no reader at {path!r} ({os.strerror(code)}); check that it is plugged in "
                "and that the path is right"
            )
        return ReaderGone(
            f"the reader at {path!r} stopped answering ({error}); check its cable and power"
        )
    return ReaderDriverFailed(
        f"the NFC driver failed on {path!r} ({type(error).__name__}: {error}); the reader "
        "is being reopened, report this if it keeps happening"
    )


def _close_frontend(clf: Any) -> None:
    """Close a frontend whatever state its device is in, and never leak its serial port.

    nfcpy's ``close()`` swallows an ``IOError`` from the chip before the port is closed, and
    lets other chip errors through; both happen when the reader is already gone.
    """
    transport = getattr(getattr(clf.device, "chipset", None), "transport", None)
    try:
        clf.close()
    except Exception as error:  # noqa: BLE001 - a dying device may raise anything on close
        log.debug("closing the NFC frontend failed: %r", error)
    port = getattr(transport, "tty", None)  # the pyserial object behind nfcpy's TTY
    if port is not None:
        with contextlib.suppress(Exception):
            port.close()


# --------------------------------------------------------------------------- the reader


def badge_of(target: Any) -> str:
    """``<technology>:<UID hex>`` of a target nfcpy sensed, from its anticollision answer.

    The UID is what InListPassiveTarget (or SENSB/SENSF) already returned: no tag activation,
    so no authentication or version probe, and a 7-byte UID costs what a 4-byte one does.
    """
    technology = TECHNOLOGY.get(str(target.brty)[-1:], "nfc-a")
    if technology == "nfc-b":
        uid = target.sensb_res[1:5]
    elif technology == "nfc-f":
        uid = target.sensf_res[1:9]
    else:  # a Type 1 (Topaz) tag has no SDD answer: its UID is in the RID answer
        uid = target.sdd_res or (target.rid_res[2:6] if target.rid_res else b"")
    return f"{technology}:{bytes(uid).hex().upper()}"


class NfcReader:
    """A badge reader run by nfcpy, implementing :class:`hw.base.Reader`.

    ``reads()`` yields ``ReaderStatus(OK)`` once the device is open (``FAULT`` with the cause
    if it cannot be), then a :class:`BadgeRead` ``nfc-a:<UID>`` per presentation. Every poll is
    one nfcpy ``sense()``: the UID comes from the anticollision answer and the tag is never
    activated (nfcpy's activation probes a 7-byte tag with commands a plain Ultralight does not
    answer, each costing the chip's timeout). A badge held on the reader is found again at each
    poll and stays one read; a new badge is read at the next poll after the last one left, so
    there is no blind time after a badge leaves. A lost device becomes ``FAULT``; the reader
    retries every ``reopen_interval_s`` and yields ``OK`` when it is back. nfcpy runs in a thread
    of its own, so ``close()`` from any thread stops it within one poll.

    Two defences against a chip that slows down after a long idle time (nfcpy issue 62: a PN532
    on a Pi taking seconds to find a badge after hours without one): a poll that takes longer
    than ``slow_poll_s`` reinitialises the chip at once, and a chip that has found no badge for
    ``refresh_idle_s`` is reinitialised before it can get slow (it costs one init, a few tens of
    milliseconds).

    :param path: nfcpy device path, or ``pn532:<serial path>``.
    :param frontend_factory: ``factory(path)`` returning an open ``nfc.ContactlessFrontend``;
        tests pass one that wires the real driver onto an emulator. Defaults to
        :func:`open_frontend`.
    :param targets: nfcpy bitrate/types to poll; each unanswered one costs time on some
        devices, so list only what the site's badges use.
    :param reopen_interval_s: seconds between attempts to reopen a faulty device; small, so a
        replugged reader reads its first badge quickly (a failed open of a missing path costs
        next to nothing).
    :param poll_interval_s: seconds between two polls (see docs/reader.md for the CPU cost).
    :param debounce_s: a badge found again less than this long after it was last seen is
        still the same presentation (a badge at the edge of the field comes and goes).
    :param slow_poll_s: a poll slower than this reinitialises the chip.
    :param refresh_idle_s: reinitialise the chip after this long without a badge; None never.
    :param summary_interval_s: while the reader is unavailable, one log line per this long.
    :param clock: monotonic seconds for the idle and outage timers; tests compress time.
    :param name: shown in logs and health; defaults to ``path``.
    """

    def __init__(
        self,
        path: str,
        *,
        frontend_factory: FrontendFactory | None = None,
        targets: Sequence[str] = ("106A",),
        reopen_interval_s: float = 0.2,
        poll_interval_s: float = 0.05,
        debounce_s: float = 0.3,
        slow_poll_s: float = 0.5,
        refresh_idle_s: float | None = 900.0,
        summary_interval_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path
        self.targets = tuple(targets)
        self.reopen_interval_s = reopen_interval_s
        self.poll_interval_s = poll_interval_s
        self.debounce_s = debounce_s
        self.slow_poll_s = slow_poll_s
        self.refresh_idle_s = refresh_idle_s
        self.reinits = 0
        """How often the chip was reinitialised because it was slow or long idle."""
        self._clock = clock
        self._factory = frontend_factory or open_frontend
        self._outage = OutageLog(self.name, log, summary_interval_s=summary_interval_s, clock=clock)
        self._stop = threading.Event()
        self._items: queue.Queue[ReaderItem] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_status: ReaderStatus | None = None
        self._last_badge: str | None = None
        self._last_seen_ns = 0
        self._active_at = clock()

    def reads(self) -> Iterator[ReaderItem]:
        """Yield statuses and reads until :meth:`close`; see the class docstring."""
        with self._start_lock:
            if self._stop.is_set():
                return
            if self._thread is not None:
                raise RuntimeError(f"reads() of {self.name!r} is already running")
            self._thread = threading.Thread(
                target=self._run, name=f"nfc-reader {self.name}", daemon=True
            )
            self._thread.start()
        try:
            while True:
                try:
                    yield self._items.get(timeout=0.1)
                except queue.Empty:
                    if not self._thread.is_alive() and self._items.empty():
                        return
        finally:
            self.close()

    def close(self) -> None:
        """Stop ``reads()`` and close the device. Safe to call twice, from any thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
            if thread.is_alive():
                log.warning("NFC driver thread of %s did not stop within 5 s", self.name)

    def __enter__(self) -> NfcReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the driver thread

    def _run(self) -> None:
        self._outage.attach()
        try:
            self._open_and_serve()
        finally:
            self._outage.detach()

    def _open_and_serve(self) -> None:
        last_loss = float("-inf")
        while not self._stop.is_set():
            try:
                clf = self._open()
            except ReaderError as error:
                self._status(ReaderState.FAULT, self._retrying(error))
                self._stop.wait(self.reopen_interval_s)
                continue
            self._status(ReaderState.OK)
            failure: ReaderError | None = None
            try:
                refresh = self._serve(clf)
            except ReaderError as error:
                failure = error
            finally:
                _close_frontend(clf)
            if failure is None:
                if refresh:
                    self.reinits += 1
                    continue
                return  # stopped
            if isinstance(failure, ReaderGone):
                # nfcpy gave up on the device. Line noise or one garbled frame does that too,
                # so reopen at once and say nothing if that works: a reader that is really
                # gone fails to reopen and is reported then. One that keeps failing right
                # after opening is reported, and paced, instead of spinning.
                now, previous = time.monotonic(), last_loss
                last_loss = now
                if now - previous >= 10 * self.reopen_interval_s:
                    log.info("reader %s: %s; reopening", self.name, failure)
                    continue
            self._status(ReaderState.FAULT, self._retrying(failure))
            self._stop.wait(self.reopen_interval_s)

    def _open(self) -> Any:
        try:
            return self._factory(self.path)
        except Exception as error:  # translated: nothing nfcpy raises escapes
            raise translate(error, self.path) from error

    def _serve(self, clf: Any) -> bool:
        """Poll for badges until stopped (False) or until the chip needs a reinit (True);
        raise a :class:`ReaderError` when the device fails."""
        targets = [nfc.clf.RemoteTarget(brty) for brty in self.targets]
        self._active_at = self._clock()
        while not self._stop.is_set():
            if (
                self.refresh_idle_s is not None
                and self._clock() - self._active_at > self.refresh_idle_s
            ):
                log.debug("reader %s idle for %g s; reinitialising", self.name, self.refresh_idle_s)
                return True
            started = time.monotonic()
            try:
                found = clf.sense(*targets, iterations=1)
            except Exception as error:  # translated: nfcpy types stop here
                raise translate(error, self.path) from error
            took = time.monotonic() - started
            if found is not None:
                self._found(badge_of(found))
            if took > self.slow_poll_s:
                log.warning(
                    "reader %s took %.2f s for one poll (normally a few ms); reinitialising "
                    "the chip",
                    self.name,
                    took,
                )
                return True
            self._stop.wait(self.poll_interval_s)
        return False

    def _found(self, badge: str) -> None:
        at_ns = time.monotonic_ns()
        self._active_at = self._clock()
        held = badge == self._last_badge and at_ns - self._last_seen_ns < self.debounce_s * 1e9
        self._last_badge, self._last_seen_ns = badge, at_ns
        if not held:
            self._items.put(BadgeRead(badge, at_ns))

    # ------------------------------------------------------------------ status

    def _retrying(self, error: ReaderError) -> str:
        return f"{error}; retrying every {self.reopen_interval_s:g} s"

    def _status(self, state: ReaderState, detail: str = "") -> None:
        """Report a change of health; while a fault lasts, the log gets a line when it starts,
        a summary now and then and a line when it ends (:class:`OutageLog`), not one a try."""
        if state is ReaderState.FAULT:
            self._outage.failed(detail)
        elif self._last_status is None or self._last_status.state is not ReaderState.OK:
            self._outage.recovered()
        status = ReaderStatus(state, detail)
        if status == self._last_status:
            return
        self._last_status = status
        self._items.put(status)
