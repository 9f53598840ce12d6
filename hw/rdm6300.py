"""125 kHz EM4100 badges through an RDM6300 (or compatible) reader on a serial line.

The reader only transmits, at 9600 8N1, one 14-byte frame per read, over and over while a
card is in the field::

    02 | 10 ASCII hex: version byte + 4 card bytes | 2 ASCII hex: XOR of those 5 bytes | 03

For example ``62E3086CED`` travels as ``b"\\x0262E3086CED08\\x03"``. :class:`FrameParser` turns
any byte stream into the valid frames it contains (skipping noise, partial frames and bad
checksums, and resynchronising on the next ``02``); :class:`Rdm6300Reader` adds the serial
port, one read per presentation and the fault handling.

Example::

    reader = Rdm6300Reader.from_device("/dev/ttyS0")
    for item in reader.reads():
        print(item)  # ReaderStatus(OK), BadgeRead("em4100:62E3086CED", ...)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import serial

from siteclock.hw.base import BadgeRead, ReaderItem, ReaderState, ReaderStatus
from siteclock.hw.errors import FrameError, ReaderGone, ReaderNotFound

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
FRAME_LEN = 14
CARD_HEX_LEN = 10
BAUDRATE = 9600
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def checksum(card_hex: str) -> str:
    """The two ASCII hex digits that end a frame: XOR of the five bytes of ``card_hex``."""
    data = bytes.fromhex(card_hex)
    if len(data) != CARD_HEX_LEN // 2:
        raise FrameError(f"{card_hex!r} is not 10 hex digits")
    return f"{functools.reduce(lambda a, b: a ^ b, data):02X}"


def build_frame(card_hex: str, check: str | None = None) -> bytes:
    """The frame the reader sends for ``card_hex``; ``check`` overrides the checksum (tests)."""
    card_hex = card_hex.upper()
    body = card_hex + (checksum(card_hex) if check is None else check)
    return bytes([STX]) + body.encode("ascii") + bytes([ETX])


class FrameParser:
    """Pure RDM6300 frame parser: ``feed(bytes) -> list[str]`` of 10-digit upper-case hex.

    Bytes may arrive in any pieces. ``counters`` counts ``frames_ok``, ``bad_checksum``
    (well-formed frames whose checksum is wrong), ``partial_frames`` (a start byte not followed
    by 12 hex digits and an end byte) and ``noise_bytes`` (bytes outside any frame). A frame
    byte that cannot belong where it stands ends the partial frame at once, and a start byte is
    never a hex digit, so the next frame is never lost to the garbage before it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.counters = {"frames_ok": 0, "bad_checksum": 0, "noise_bytes": 0, "partial_frames": 0}

    def feed(self, data: bytes) -> list[str]:
        buf = self._buf
        buf += data
        cards: list[str] = []
        while buf:
            if buf[0] != STX:
                start = buf.find(STX)
                skip = len(buf) if start < 0 else start
                self.counters["noise_bytes"] += skip
                del buf[:skip]
                continue
            body = buf[1 : FRAME_LEN - 1]
            wrong = next((i for i, b in enumerate(body) if b not in _HEX), None)
            if wrong is not None:
                # Keep the offending byte: it may be the start of the next frame.
                self.counters["partial_frames"] += 1
                del buf[: 1 + wrong]
                continue
            if len(buf) < FRAME_LEN:
                break  # wait for the rest of the frame
            if buf[FRAME_LEN - 1] != ETX:
                self.counters["partial_frames"] += 1
                del buf[: FRAME_LEN - 1]
                continue
            text = bytes(buf[1 : FRAME_LEN - 1]).decode("ascii").upper()
            del buf[:FRAME_LEN]
            card, check = text[:CARD_HEX_LEN], text[CARD_HEX_LEN:]
            if checksum(card) != check:
                self.counters["bad_checksum"] += 1
                continue
            self.counters["frames_ok"] += 1
            cards.append(card)
        return cards


class SerialPort(Protocol):
    """What the reader needs from a pyserial ``Serial``: a read with a timeout, and close."""

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


def serial_port(device: str, baudrate: int = BAUDRATE, timeout: float = 0.1) -> Callable[[], Any]:
    """A port factory opening ``device`` at 9600 8N1 with a short read timeout."""

    def open_port() -> Any:
        return serial.Serial(device, baudrate, timeout=timeout)

    open_port.__name__ = f"serial_port({device!r})"
    return open_port


class Rdm6300Reader:
    """An RDM6300 125 kHz reader on a serial port, implementing :class:`hw.base.Reader`.

    ``reads()`` yields ``ReaderStatus(OK)`` once the port is open (``FAULT`` with the cause if
    it cannot be), then ``BadgeRead("em4100:<10 HEX>")`` once per presentation: the frames a
    card repeats while it stays in the field are one read, and the card counts as gone after
    ``removal_s`` without a frame. A port that fails becomes ``FAULT``, is reopened every
    ``reopen_interval_s``, and ``OK`` comes back with it. ``reads()`` runs in the caller's
    thread; ``close()`` from another thread ends it within one read timeout.

    :param port_factory: returns an open pyserial-like port whose ``read(n)`` has a timeout.
    :param removal_s: seconds without a frame after which the card has left.
    :param reopen_interval_s: seconds between attempts to reopen a failed port.
    :param name: shown in logs and health.
    """

    def __init__(
        self,
        port_factory: Callable[[], SerialPort],
        *,
        removal_s: float = 0.5,
        reopen_interval_s: float = 1.0,
        name: str = "rdm6300",
    ) -> None:
        self.name = name
        self.removal_s = removal_s
        self.reopen_interval_s = reopen_interval_s
        self._factory = port_factory
        self._parser = FrameParser()
        self._stop = threading.Event()

    @classmethod
    def from_device(cls, device: str, **kwargs: Any) -> Rdm6300Reader:
        """A reader on the serial device ``device`` (``/dev/ttyS0``, ``/dev/serial0``, ...)."""
        kwargs.setdefault("name", f"rdm6300:{device}")
        return cls(serial_port(device), **kwargs)

    @property
    def counters(self) -> dict[str, int]:
        """The parser's counts of good frames and of what it skipped."""
        return self._parser.counters

    def reads(self) -> Iterator[ReaderItem]:
        """Yield statuses and reads until :meth:`close`; see the class docstring."""
        last_card: str | None = None
        last_frame_at = float("-inf")
        fault: str | None = None
        while not self._stop.is_set():
            try:
                port = self._factory()
            except (serial.SerialException, OSError) as error:
                detail = (
                    f"{_open_failed(self.name, error)}; retrying every {self.reopen_interval_s:g} s"
                )
                if detail != fault:
                    log.warning("reader %s: %s", self.name, detail)
                    fault = detail
                    yield ReaderStatus(ReaderState.FAULT, detail)
                self._stop.wait(self.reopen_interval_s)
                continue
            fault = None
            yield ReaderStatus(ReaderState.OK)
            try:
                while not self._stop.is_set():
                    data = port.read(1)
                    waiting = getattr(port, "in_waiting", 0)
                    if data and waiting:
                        data += port.read(waiting)
                    if not data:
                        continue
                    now = time.monotonic()
                    for card in self._parser.feed(data):
                        if card != last_card or now - last_frame_at >= self.removal_s:
                            yield BadgeRead(f"em4100:{card}", time.monotonic_ns())
                        last_card, last_frame_at = card, now
            except (serial.SerialException, OSError) as error:
                gone = ReaderGone(
                    f"the serial port of {self.name} failed ({error}); check the reader's "
                    f"cable and power; retrying every {self.reopen_interval_s:g} s"
                )
                fault = str(gone)
                log.warning("reader %s: %s", self.name, gone)
                yield ReaderStatus(ReaderState.FAULT, fault)
                self._stop.wait(self.reopen_interval_s)
            finally:
                with contextlib.suppress(Exception):
                    port.close()

    def close(self) -> None:
        """Stop ``reads()``; the port is closed by the loop. Safe to call twice."""
        self._stop.set()

    def __enter__(self) -> Rdm6300Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_failed(name: str, error: BaseException) -> str:
    return str(
        ReaderNotFound(
            f"cannot open the serial port of {name} ({error}); check that the reader is "
            "connected, that the device path is right and that the service user is in "
            "the 'dialout' group"
        )
    )
