"""A simulated badge reader: taps arrive as text lines on a Unix socket.

Production code, like gpiozero's mock pins: ``make demo`` and the end-to-end tests tap badges
through it, and an installer can use it to try a terminal with no reader attached. Each line
a client writes is one tap: ``nfc-a:04A1B2C3`` (``<technology>:<HEX>``, see
``siteclock.protocol``) or a bare hex UID, taken as ``nfc-a``. The reader answers every line
with ``ok`` (the tap was handed to the terminal: *not* that it was saved) or
``error: <why>``.

Example::

    reader = SimReader("/run/siteclock/taps.sock")
    # in another process:  send_taps("/run/siteclock/taps.sock", ["04A1B2C3"]) -> ["ok"]
    for item in reader.reads():
        print(item)  # ReaderStatus(OK), BadgeRead("nfc-a:04A1B2C3", ...)

From a shell: ``echo 04A1B2C3 | socat - UNIX-CONNECT:/run/siteclock/taps.sock``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import selectors
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator

from siteclock.hw.base import BadgeRead, ReaderItem, ReaderState, ReaderStatus
from siteclock.hw.errors import BadgeSpecError, ReaderBusy, ReaderError
from siteclock.protocol import BADGE_RE

log = logging.getLogger(__name__)

MAX_LINE = 256
"""Longest accepted line, in bytes; a longer one is answered with an error and dropped."""
DEFAULT_TECHNOLOGY = "nfc-a"
_HEX_RE = re.compile(r"^[0-9A-F]+$")


def parse_badge(line: str) -> str:
    """``nfc-a:04a1b2c3`` or ``04A1B2C3`` -> ``nfc-a:04A1B2C3``; :exc:`BadgeSpecError` if not."""
    text = line.strip()
    if not text:
        raise BadgeSpecError("empty line; send a badge such as nfc-a:04A1B2C3 or a hex UID")
    technology, _, ident = text.rpartition(":")
    technology, ident = (technology.lower() or DEFAULT_TECHNOLOGY), ident.upper()
    if not _HEX_RE.match(ident):
        raise BadgeSpecError(f"{ident!r} is not hexadecimal")
    if len(ident) % 2:
        raise BadgeSpecError(f"{ident!r} has an odd number of hex digits; a UID is whole bytes")
    badge = f"{technology}:{ident}"
    if not BADGE_RE.match(badge):
        raise BadgeSpecError(
            f"{text!r} is not a badge: the technology must be one of nfc-a, nfc-b, nfc-f, "
            "em4100, wiegand, sim and the identifier 2 to 40 hex digits"
        )
    return badge


class SimReader:
    """A reader fed by lines on a Unix stream socket, implementing :class:`hw.base.Reader`.

    ``reads()`` creates the socket (mode ``mode``, a stale socket file is replaced), yields
    ``ReaderStatus(OK)`` and then one :class:`BadgeRead` per valid line. Invalid lines are
    answered with an error and counted in ``counters["invalid_lines"]``. If the socket
    cannot be created, ``reads()`` yields ``FAULT`` and retries every ``reopen_interval_s``.
    ``close()`` from another thread ends ``reads()`` within ``poll_s``; the socket file is
    removed.

    :param socket_path: where to listen.
    :param mode: permissions of the socket file: 0o600 (owner only) or 0o660 (and group).
    :param reopen_interval_s: seconds between attempts to create the socket.
    :param poll_s: how often the loop checks for :meth:`close`.
    :param name: shown in logs and health; defaults to ``sim:<socket_path>``.
    """

    def __init__(
        self,
        socket_path: str,
        *,
        mode: int = 0o600,
        reopen_interval_s: float = 1.0,
        poll_s: float = 0.1,
        name: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.name = name or f"sim:{socket_path}"
        self.mode = mode
        self.reopen_interval_s = reopen_interval_s
        self.poll_s = poll_s
        self.counters = {"taps": 0, "invalid_lines": 0}
        self._stop = threading.Event()

    def reads(self) -> Iterator[ReaderItem]:
        """Yield statuses and reads until :meth:`close`; see the class docstring."""
        fault: str | None = None
        server: socket.socket | None = None
        while server is None and not self._stop.is_set():
            try:
                server = self._listen()
            except (ReaderError, OSError) as error:
                detail = f"{error}; retrying every {self.reopen_interval_s:g} s"
                if detail != fault:
                    fault = detail
                    log.warning("reader %s: %s", self.name, detail)
                    yield ReaderStatus(ReaderState.FAULT, detail)
                self._stop.wait(self.reopen_interval_s)
        if server is None:
            return
        inode = os.stat(self.socket_path).st_ino
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ)
        buffers: dict[socket.socket, bytearray] = {}
        try:
            yield ReaderStatus(ReaderState.OK)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=self.poll_s):
                    if key.fileobj is server:
                        with contextlib.suppress(BlockingIOError):
                            client, _ = server.accept()
                            client.setblocking(False)
                            selector.register(client, selectors.EVENT_READ)
                            buffers[client] = bytearray()
                        continue
                    client = key.fileobj  # type: ignore[assignment]
                    try:
                        data = client.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(client)
                        buffers.pop(client, None)
                        client.close()
                        continue
                    for line in self._lines(buffers[client], data):
                        yield from self._tap(client, line)
        finally:
            for client in buffers:
                client.close()
            selector.close()
            server.close()
            with contextlib.suppress(OSError):
                if os.stat(self.socket_path).st_ino == inode:
                    os.unlink(self.socket_path)

    def close(self) -> None:
        """Stop ``reads()`` and remove the socket. Safe to call twice."""
        self._stop.set()

    def __enter__(self) -> SimReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _listen(self) -> socket.socket:
        path = self.socket_path
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ReaderBusy(
                    f"{path} exists and is not a socket; remove it or pick another path"
                )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except (ConnectionRefusedError, FileNotFoundError):
                    os.unlink(path)  # left behind by a process that died
                else:
                    raise ReaderBusy(
                        f"another process listens on {path}; stop it or pick another path"
                    )
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind and listen under a temporary name, then rename: the path appears only once it
        # accepts connections, so a client that sees the file never gets "connection refused".
        staging = f"{path}.{os.getpid()}.new"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
            os.fchmod(server.fileno(), self.mode)  # Linux creates the file with this mode
            server.bind(staging)
            os.chmod(staging, self.mode)  # exactly this mode, whatever the umask
            server.listen(8)
            os.rename(staging, path)
            server.setblocking(False)
        except OSError:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
            raise
        log.info("simulated reader listening on %s", path)
        return server

    def _lines(self, buffer: bytearray, data: bytes) -> list[bytes | None]:
        """Complete lines in ``buffer + data``; ``None`` stands for a line that was too long."""
        buffer += data
        lines: list[bytes | None] = []
        while (end := buffer.find(b"\n")) >= 0:
            lines.append(bytes(buffer[:end]) if end <= MAX_LINE else None)
            del buffer[: end + 1]
        if len(buffer) > MAX_LINE:
            buffer.clear()
            lines.append(None)
        return lines

    def _tap(self, client: socket.socket, raw: bytes | None) -> Iterator[ReaderItem]:
        at_ns = time.monotonic_ns()
        try:
            if raw is None:
                raise BadgeSpecError(f"line longer than {MAX_LINE} bytes")
            badge = parse_badge(raw.decode("ascii"))
        except UnicodeDecodeError:
            self._reply(client, "error: not ASCII text")
            self.counters["invalid_lines"] += 1
            return
        except BadgeSpecError as error:
            self._reply(client, f"error: {error}")
            self.counters["invalid_lines"] += 1
            return
        self.counters["taps"] += 1
        self._reply(client, "ok")  # handed to the terminal, which yields it next
        yield BadgeRead(badge, at_ns)

    def _reply(self, client: socket.socket, text: str) -> None:
        try:
            client.sendall(text.encode("ascii", "replace") + b"\n")
        except OSError as error:  # a client that does not read its replies loses them
            if error.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                log.debug("reply to a sim client failed: %r", error)


def send_taps(socket_path: str, badges: Iterable[str], *, timeout: float = 5.0) -> list[str]:
    """Tap ``badges`` on the simulated reader at ``socket_path``; return its replies in order.

    Each reply is ``"ok"`` or ``"error: <why>"``. Raises ``OSError`` if nothing listens there.
    """
    replies: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        with sock.makefile("rwb") as stream:
            for badge in badges:
                stream.write(badge.encode("utf-8") + b"\n")
                stream.flush()
                reply = stream.readline()
                if not reply:
                    raise ConnectionError(f"{socket_path}: the simulated reader hung up")
                replies.append(reply.decode("ascii", "replace").rstrip("\r\n"))
    return replies
