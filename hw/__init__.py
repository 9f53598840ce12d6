"""Badge readers and the one interface they share; see :mod:`hw.base`.

Open a reader from the spec string in the terminal's configuration::

    reader = open_reader("tty:AMA0:pn532")
    for item in mark_repeats(reader.reads()):
        ...

``import hw`` does not import nfcpy: :class:`NfcReader` loads it when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from siteclock.hw.base import BadgeRead, Reader, ReaderItem, ReaderState, ReaderStatus
from siteclock.hw.errors import (
    BadgeSpecError,
    FrameError,
    ReaderAccessDenied,
    ReaderBusy,
    ReaderDriverFailed,
    ReaderDriverMissing,
    ReaderError,
    ReaderGone,
    ReaderNotFound,
    ReaderSpecError,
)
from siteclock.hw.rdm6300 import Rdm6300Reader
from siteclock.hw.repeat import mark_repeats
from siteclock.hw.sim import SimReader, send_taps

if TYPE_CHECKING:
    from siteclock.hw.nfc_reader import NfcReader

__all__ = [
    "BadgeRead",
    "BadgeSpecError",
    "FrameError",
    "NfcReader",
    "Rdm6300Reader",
    "Reader",
    "ReaderAccessDenied",
    "ReaderBusy",
    "ReaderDriverFailed",
    "ReaderDriverMissing",
    "ReaderError",
    "ReaderGone",
    "ReaderItem",
    "ReaderNotFound",
    "ReaderSpecError",
    "ReaderState",
    "ReaderStatus",
    "SimReader",
    "mark_repeats",
    "open_reader",
    "send_taps",
]

SPEC_HELP = (
    "expected tty:<port>:<driver> (tty:AMA0:pn532), usb[:vendor:product], udp:<host>:<port>, "
    "pn532:<serial path>, rdm6300:<serial device> or sim:<socket path>"
)


def open_reader(spec: str, **kwargs: Any) -> Reader:
    """The reader a spec string names; ``kwargs`` go to its constructor.

    ============================== =====================================================
    ``tty:AMA0:pn532``, ``usb...``  :class:`NfcReader` (nfcpy), also ``udp:host:port``
    ``pn532:/dev/serial/by-id/..``  :class:`NfcReader`, PN532 on any serial path
    ``rdm6300:/dev/ttyS0``          :class:`Rdm6300Reader`, 125 kHz EM4100
    ``sim:/run/siteclock/taps.sock`` :class:`SimReader`, taps written to a Unix socket
    ============================== =====================================================

    Raises :exc:`ReaderSpecError` (a ``ValueError``) naming the spec when it fits none.
    Opening never touches the device: faults show up as statuses from ``reads()``.
    """
    if not isinstance(spec, str):
        raise ReaderSpecError(f"reader spec {spec!r} is not a string; {SPEC_HELP}")
    kind, _, rest = spec.partition(":")
    if kind in ("tty", "usb", "udp", "pn532") and (rest or kind in ("usb", "udp")):
        from siteclock.hw.nfc_reader import NfcReader

        return NfcReader(spec, **kwargs)
    if kind == "rdm6300" and rest:
        return Rdm6300Reader.from_device(rest, **kwargs)
    if kind == "sim" and rest:
        return SimReader(rest, **kwargs)
    raise ReaderSpecError(f"unknown reader spec {spec!r}; {SPEC_HELP}")


def __getattr__(name: str) -> Any:
    if name == "NfcReader":
        from siteclock.hw.nfc_reader import NfcReader

        return NfcReader
    raise AttributeError(f"module 'hw' has no attribute {name!r}")
