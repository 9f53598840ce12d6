"""Errors raised inside ``hw/``.

Every error is a :class:`ReaderError` and also the builtin it behaves like, so a caller may
catch either ``ReaderError`` or, say, ``OSError``. Readers never let a device fault escape
``reads()``: they turn it into a ``ReaderStatus(FAULT, str(error))``, so each message names the
cause and then the next step, separated by ``"; "``.
"""

from __future__ import annotations


class ReaderError(Exception):
    """Base class for every error raised by a badge reader."""


class ReaderSpecError(ReaderError, ValueError):
    """A reader spec string names no reader kind this package knows."""


class ReaderNotFound(ReaderError, OSError):
    """No reader answered at the configured device path."""


class ReaderGone(ReaderError, OSError):
    """A reader that was open stopped answering or disappeared."""


class ReaderBusy(ReaderError, OSError):
    """The reader is held by another process or a kernel driver."""


class ReaderAccessDenied(ReaderError, PermissionError):
    """The service user may not open the reader's device node."""


class ReaderDriverMissing(ReaderError, OSError):
    """A system library the reader's driver needs (such as libusb) is not installed."""


class ReaderDriverFailed(ReaderError, RuntimeError):
    """The reader's driver raised something unexpected; the reader will be reopened."""


class FrameError(ReaderError, ValueError):
    """Bytes from a reader do not form a valid frame."""


class BadgeSpecError(ReaderError, ValueError):
    """A simulated tap line does not name a badge."""
