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


class NfcReader:
    """A badge reader run by nfcpy, implementing :class:`hw.base.Reader`.

    ``reads()`` yields ``ReaderStatus(OK)`` once the device is open (``FAULT`` with the cause
    if it cannot be), then a :class:`BadgeRead` ``nfc-a:<UID>`` per presentation: a badge held
    on the reader is one read, because nfcpy keeps checking that the tag is present and only
    looks for a new one after it has gone. A lost device becomes ``FAULT``; the reader retries
    every ``reopen_interval_s`` and yields ``OK`` when it is back. nfcpy runs in a thread of
    its own, so ``close()`` from any thread stops it within ``poll_interval_s`` or so.

    :param path: nfcpy device path, or ``pn532:<serial path>``.
    :param frontend_factory: ``factory(path)`` returning an open ``nfc.ContactlessFrontend``;
        tests pass one that wires the real driver onto an emulator. Defaults to
        :func:`open_frontend`.
    :param targets: nfcpy bitrate/types to poll; each unanswered one costs time on some
        devices, so list only what the site's badges use.
    :param reopen_interval_s: seconds between attempts to reopen a faulty device.
    :param poll_interval_s: seconds between two polls for a badge when the field is empty.
    :param debounce_s: a badge found again less than this long after it was last seen is
        still the same presentation (a MIFARE Classic fails nfcpy's presence check while held,
        and a badge at the edge of the field comes and goes).
    :param name: shown in logs and health; defaults to ``path``.
    """

    def __init__(
        self,
        path: str,
        *,
        frontend_factory: FrontendFactory | None = None,
        targets: Sequence[str] = ("106A",),
        reopen_interval_s: float = 1.0,
        poll_interval_s: float = 0.1,
        debounce_s: float = 0.5,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path
        self.targets = tuple(targets)
        self.reopen_interval_s = reopen_interval_s
        self.poll_interval_s = poll_interval_s
        self.debounce_s = debounce_s
        self._factory = frontend_factory or open_frontend
        self._stop = threading.Event()
        self._items: queue.Queue[ReaderItem] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_status: ReaderStatus | None = None
        self._last_badge: str | None = None
        self._last_seen_ns = 0

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
                self._serve(clf)
            except ReaderError as error:
                failure = error
            finally:
                _close_frontend(clf)
            if failure is None:
                return  # stopped
            if isinstance(failure, ReaderGone):
                # nfcpy gave up on the device. Line noise or one garbled frame does that too,
                # so reopen at once and say nothing if that works: a reader that is really
                # gone fails to reopen and is reported then. One that keeps failing right
                # after opening is reported, and paced, instead of spinning.
                now, previous = time.monotonic(), last_loss
                last_loss = now
                if now - previous >= 10 * self.reopen_interval_s:
                    log.warning("reader %s: %s; reopening", self.name, failure)
                    continue
            self._status(ReaderState.FAULT, self._retrying(failure))
            self._stop.wait(self.reopen_interval_s)

    def _open(self) -> Any:
        try:
            return self._factory(self.path)
        except Exception as error:  # translated: nothing nfcpy raises escapes
            raise translate(error, self.path) from error

    def _serve(self, clf: Any) -> None:
        """Poll for badges until stopped; raise a :class:`ReaderError` when the device fails."""
        rdwr = {
            "targets": list(self.targets),
            "on-connect": self._on_connect,
            "on-release": self._on_release,
            "iterations": 1,
            "beep-on-connect": False,  # feedback belongs to the terminal, not the reader
        }
        while not self._stop.is_set():
            try:
                # terminate() is called before each poll and between presence checks: waiting
                # on the stop event there paces the polls and ends connect() promptly.
                result = clf.connect(rdwr=rdwr, terminate=self._pause_or_stop)
            except Exception as error:  # translated: nfcpy types stop here
                raise translate(error, self.path) from error
            if result is False:  # nfcpy logged an IOError and gave up on the device
                raise ReaderGone(
                    f"lost the connection to the reader at {self.path!r}; check its cable and power"
                )

    def _pause_or_stop(self) -> bool:
        return self._stop.wait(self.poll_interval_s)

    def _on_connect(self, tag: Any) -> bool:
        at_ns = time.monotonic_ns()
        technology = TECHNOLOGY.get(str(tag.target.brty)[-1:], "nfc-a")
        badge = f"{technology}:{bytes(tag.identifier).hex().upper()}"
        held = badge == self._last_badge and at_ns - self._last_seen_ns < self.debounce_s * 1e9
        self._last_badge, self._last_seen_ns = badge, at_ns
        if not held:
            self._items.put(BadgeRead(badge, at_ns))
        return True  # nfcpy now waits until the badge is taken away

    def _on_release(self, tag: Any) -> bool:
        self._last_seen_ns = time.monotonic_ns()
        return True

    # ------------------------------------------------------------------ status

    def _retrying(self, error: ReaderError) -> str:
        return f"{error}; retrying every {self.reopen_interval_s:g} s"

    def _status(self, state: ReaderState, detail: str = "") -> None:
        status = ReaderStatus(state, detail)
        if status == self._last_status:
            return
        self._last_status = status
        if state is ReaderState.FAULT:
            log.warning("reader %s: %s", self.name, detail)
        else:
            log.info("reader %s is ready", self.name)
        self._items.put(status)
