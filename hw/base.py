"""The one small interface every badge reader implements.

A reader turns a physical badge into :class:`BadgeRead` values and reports its own health as
:class:`ReaderStatus` values, both through one blocking iterator, ``reads()``. The terminal runs
that iterator in a thread; nothing above ``hw/`` knows whether the badge came from a PN532 on
the Pi's UART, a USB reader, a 125 kHz serial reader or the simulator.

Readers are opened from a spec string, the way nfcpy names its devices::

    reader = open_reader("tty:AMA0:pn532")      # nfcpy, PN532 on the Pi UART
    reader = open_reader("usb")                 # nfcpy, first USB reader
    reader = open_reader("rdm6300:/dev/ttyS0")  # 125 kHz EM4100 over pyserial
    reader = open_reader("sim:/run/siteclock/taps.sock")  # simulated taps (demo, tests)
    for item in reader.reads():
        ...
    reader.close()
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BadgeRead:
    """A badge presented to the reader.

    ``badge`` follows the wire format ``<technology>:<HEX>`` (see ``siteclock.protocol``).
    ``at_ns`` is ``time.monotonic_ns()`` when the driver delivered the read: tap latency is
    measured from here. ``repeat`` is set by :func:`hw.repeat.mark_repeats` when the same badge
    came again within the repeat window.
    """

    badge: str
    at_ns: int
    repeat: bool = False


class ReaderState(StrEnum):
    OK = "ok"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    """A change in the reader's health. ``detail`` names the cause and the next step."""

    state: ReaderState
    detail: str = ""


ReaderItem = BadgeRead | ReaderStatus


class Reader(Protocol):
    """What the terminal needs from any reader."""

    name: str

    def reads(self) -> Iterator[ReaderItem]:
        """Block and yield reads and status changes until :meth:`close` is called.

        A reader that loses its device yields ``ReaderStatus(FAULT, ...)``, keeps trying to
        reopen it, and yields ``ReaderStatus(OK)`` when it is back: it never raises for a
        device fault. A badge held on the reader yields one read, not one per poll.
        """
        ...

    def close(self) -> None:
        """Stop ``reads()`` and release the device. Safe to call twice."""
        ...
