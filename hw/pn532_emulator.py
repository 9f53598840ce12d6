"""A PN532 NFC controller emulated on a pseudo-terminal, for tests, benchmarks and the demo.

The emulator plays the chip at the far end of a serial line (HSU). nfcpy's real ``pn532``
driver talks to it through pyserial exactly as it would to a breakout board on a Pi's UART:
init, firmware version, SAM configuration, baud-rate switch, the Diagnose line test, RF
configuration, InListPassiveTarget with 4-, 7- and 10-byte UIDs, Type 2 presence checks
through InCommunicateThru, and power-down on close. A badge can be placed and removed, the
reader can be unplugged and plugged back (its path vanishes and returns, like a USB-serial
adapter under a ``/dev/serial/by-id`` name), and noise can be pushed onto the line.

Example::

    with PN532Emulator() as chip:
        reader = NfcReader(chip.path, frontend_factory=frontend_for_pty)
        chip.place(bytes.fromhex("04A1B2C3D4E5F6"))

Frames follow the PN532 user manual: ``00 00 FF LEN LCS TFI DATA DCS 00``, the extended form
``00 00 FF FF FF LENm LENl LCS ...`` for more than 254 bytes, ``00 00 FF 00 FF 00`` for ACK.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from typing import Any

# --------------------------------------------------------------------------- frame vocabulary

ACK = bytes.fromhex("0000ff00ff00")
NACK = bytes.fromhex("0000ffff0000")
ERROR_FRAME = bytes.fromhex("0000ff01ff7f8100")
"""The chip's answer to a frame it cannot execute ("syntax error", TFI 7F)."""
HOST_TFI = 0xD4
CHIP_TFI = 0xD5

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])  # IC PN532, version 1.6, supports ISO A, B, 18092
STATUS_OK = 0x00
STATUS_TIMEOUT = 0x01  # "the target has not answered"
CIU_FIFO_DATA = 0x6339
SENS_REQ = 0x26  # left in the CIU FIFO when no card answered REQA
CASCADE_TAG = 0x88
RF_CONFIG_FIELD = 0x01
TT2_READ = 0x30

SILENT_TAG_S = 0.012
"""How long the chip takes to report that a tag did not answer a command (``InCommunicateThru``
status 01): its timer runs out first. nfcpy's NXP probes (Ultralight C authenticate, GET_VERSION)
ask for 10 ms, and the chip adds its own frame handling, so an unanswered probe is never free."""
ANTICOLLISION_LEVEL_S = 0.0015
"""One anticollision and select cascade level on the air at 106 kbps (REQA, ANTICOLLISION,
SELECT with their frame delay times): a 7-byte UID takes two levels, a 10-byte one three."""


def checksum(data: bytes) -> int:
    """The byte that makes ``sum(data) + checksum`` a multiple of 256 (LCS and DCS)."""
    return -sum(data) & 0xFF


def information_frame(body: bytes) -> bytes:
    """Wrap ``TFI + data`` in a normal frame, or an extended one when it is too long."""
    if len(body) <= 254:
        head = bytes([0x00, 0x00, 0xFF, len(body), checksum(bytes([len(body)]))])
    else:
        size = len(body).to_bytes(2, "big")
        head = b"\x00\x00\xff\xff\xff" + size + bytes([checksum(size)])
    return head + body + bytes([checksum(body), 0x00])


def command_frame(code: int, data: bytes = b"") -> bytes:
    """A host-to-chip command frame (TFI D4)."""
    return information_frame(bytes([HOST_TFI, code]) + data)


def response_frame(code: int, data: bytes = b"") -> bytes:
    """The chip's response to command ``code`` (TFI D5, response code ``code + 1``)."""
    return information_frame(bytes([CHIP_TFI, code + 1]) + data)


def crc_a(data: bytes) -> bytes:
    """ISO/IEC 14443-3 CRC_A (preset 6363h, reflected CCITT), low byte first."""
    crc = 0x6363
    for byte in data:
        byte ^= crc & 0xFF
        byte = (byte ^ (byte << 4)) & 0xFF
        crc = (crc >> 8) ^ (byte << 8) ^ (byte << 3) ^ (byte >> 4)
    return bytes([crc & 0xFF, crc >> 8])


def cascade_uid(uid: bytes) -> bytes:
    """The UID as InListPassiveTarget's initiator data names it, cascade tags included."""
    if len(uid) == 4:
        return uid
    if len(uid) == 7:
        return bytes([CASCADE_TAG]) + uid
    return bytes([CASCADE_TAG]) + uid[:3] + bytes([CASCADE_TAG]) + uid[3:]


class FrameSplitter:
    """Cut the host's byte stream into frames: ``ACK``, ``NACK`` or an information body.

    Bytes that are not a frame (the long preamble nfcpy sends, line noise, a frame with a bad
    checksum) are dropped and counted in ``.dropped``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            start = buf.find(b"\x00\xff")
            if start < 0:
                keep = 1 if buf.endswith(b"\x00") else 0
                self.dropped += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            self.dropped += start
            del buf[:start]
            if len(buf) < 4:
                return out
            a, b = buf[2], buf[3]
            if (a, b) in ((0x00, 0xFF), (0xFF, 0x00)):
                out.append(ACK if a == 0x00 else NACK)
                del buf[:4]
                continue
            if (a, b) == (0xFF, 0xFF):
                if len(buf) < 7:
                    return out
                size, header = buf[4] << 8 | buf[5], 7
                length_ok = (buf[4] + buf[5] + buf[6]) & 0xFF == 0
            else:
                size, header, length_ok = a, 4, (a + b) & 0xFF == 0
            if not length_ok:
                self.dropped += 2
                del buf[:2]
                continue
            if len(buf) < header + size + 1:
                return out
            body = bytes(buf[header : header + size])
            dcs = buf[header + size]
            del buf[: header + size + 1]
            if (sum(body) + dcs) & 0xFF or not body:
                self.dropped += header + size + 1
                continue
            out.append(body)


class PN532Emulator:
    """A PN532 on a pty whose :attr:`path` the host opens like a serial device.

    :param uid: a badge already on the reader when it starts, or None.
    :param sak: the SAK of that badge.
    :param silent_tag_s: how long a command the tag does not answer takes (the chip's timeout);
        0 answers at once, which hides what probes cost.
    :param anticollision_level_s: air time of one cascade level of the anticollision.
    :param clock: seconds, for the idle model below; tests pass a compressed clock.
    :param slow_after_idle_s: when set, a chip left this long (by ``clock``) without finding a
        badge or being initialised answers every InListPassiveTarget ``slow_poll_s`` late,
        until it is initialised again: a model of the PN532 that slows to seconds after hours
        idle (nfcpy issue 62), whose cause is not known, for the reader's defence to be tested.
    :param slow_poll_s: the extra delay of a slowed chip (below nfcpy's 1 s command timeout).

    A thread answers the host until :meth:`close`. All methods are safe from other threads.
    """

    def __init__(
        self,
        uid: bytes | None = None,
        sak: int = 0x00,
        *,
        silent_tag_s: float = SILENT_TAG_S,
        anticollision_level_s: float = ANTICOLLISION_LEVEL_S,
        clock: Callable[[], float] = time.monotonic,
        slow_after_idle_s: float | None = None,
        slow_poll_s: float = 0.8,
    ) -> None:
        self.silent_tag_s = silent_tag_s
        self.anticollision_level_s = anticollision_level_s
        self.slow_after_idle_s = slow_after_idle_s
        self.slow_poll_s = slow_poll_s
        self._clock = clock
        self._active_at = clock()
        self._delay = 0.0
        self.slow_answers = 0
        """InListPassiveTarget answers delayed because the chip was left idle too long."""
        self.cpu_s = 0.0
        """CPU seconds this emulator's thread has used, so a benchmark can leave it out."""
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="pn532-")
        self.path = os.path.join(self._dir, "ttyPN532")
        self._card: tuple[bytes, int] | None = None
        self._selected = False
        self._registers: dict[int, int] = {}
        self._commands: list[int] = []
        self._garbage: list[bytes] = []
        self._want_plugged = True
        self._master: int | None = None
        self._slave: int | None = None
        self._last_response = b""
        self._splitter = FrameSplitter()
        self._plug_changed = threading.Event()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._plug_in()
        if uid is not None:
            self.place(uid, sak)
        self._thread = threading.Thread(target=self._serve, name="pn532-emulator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the world around it

    def place(self, uid: bytes, sak: int = 0x00) -> None:
        """Put a badge with this UID (4, 7 or 10 bytes) and SAK on the reader."""
        if len(uid) not in (4, 7, 10):
            raise ValueError(f"a UID is 4, 7 or 10 bytes, not {len(uid)}")
        with self._lock:
            self._card, self._selected = (bytes(uid), sak), False

    def remove(self) -> None:
        """Take the badge away: presence checks now fail."""
        with self._lock:
            self._card, self._selected = None, False

    @property
    def present(self) -> bool:
        with self._lock:
            return self._card is not None

    def unplug(self) -> None:
        """Pull the reader out: the pty closes, :attr:`path` vanishes, the host gets I/O errors."""
        self._request(plugged=False)

    def replug(self) -> None:
        """Plug the reader back in under the same :attr:`path` (a fresh pty behind it)."""
        self._request(plugged=True)

    def inject_garbage(self, data: bytes) -> None:
        """Send these bytes to the host as if the line picked up noise."""
        with self._lock:
            self._garbage.append(bytes(data))
        os.write(self._wake_w, b"g")

    @property
    def commands(self) -> list[int]:
        """Command codes received so far, in order (0x4A = InListPassiveTarget, ...)."""
        with self._lock:
            return list(self._commands)

    def close(self) -> None:
        """Stop the thread, close the pty and remove :attr:`path`. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._plug_out()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PN532Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the pty

    def _request(self, *, plugged: bool) -> None:
        self._plug_changed.clear()
        with self._lock:
            self._want_plugged = plugged
        os.write(self._wake_w, b"p")
        if not self._plug_changed.wait(timeout=5):
            raise TimeoutError("the emulator thread did not answer")

    def _plug_in(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are
        os.set_blocking(master, False)  # a host that stops reading must not wedge the thread
        link = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(os.ttyname(slave), link)
        os.replace(link, self.path)
        self._master, self._slave = master, slave
        self._splitter = FrameSplitter()

    def _plug_out(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        with self._lock:
            self._selected = False

    def _serve(self) -> None:
        # Only this thread opens, closes, reads or writes the pty, so a file descriptor is
        # never closed under a select() that still watches it.
        while not self._stopping:
            self.cpu_s = time.thread_time()
            with self._lock:
                want_plugged, garbage, self._garbage = self._want_plugged, self._garbage, []
            if want_plugged and self._master is None:
                self._plug_in()
                self._plug_changed.set()
            elif not want_plugged and self._master is not None:
                self._plug_out()
                self._plug_changed.set()
            if self._master is not None:
                for chunk in garbage:
                    self._send(chunk)
            watch = [self._wake_r] + ([self._master] if self._master is not None else [])
            ready, _, _ = select.select(watch, [], [], 0.5)
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            if self._master is not None and self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    continue
                for frame in self._splitter.feed(data):
                    self._answer(frame)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a full buffer drops the rest, as a UART would
            os.write(self._master, data)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the chip

    def _answer(self, frame: bytes) -> None:
        if frame == ACK:  # the host aborts the running command; ours are already done
            return
        if frame == NACK:  # the host asks for the last response again
            self._send(self._last_response)
            return
        if frame[0] != HOST_TFI or len(frame) < 2:
            self._send(ERROR_FRAME)
            return
        code, data = frame[1], frame[2:]
        with self._lock:
            self._commands.append(code)
            handler = self._HANDLERS.get(code)
            self._delay = 0.0
            payload = handler(self, data) if handler else None
            delay = self._delay
        reply = ERROR_FRAME if payload is None else response_frame(code, payload)
        self._last_response = reply
        # The chip acknowledges a command at once and answers when it is done: the time a
        # command takes on the air is spent between the two, as on the real line.
        self._send(ACK)
        if delay > 0:
            time.sleep(delay)
        self._send(reply)

    def _diagnose(self, data: bytes) -> bytes:
        return data if data[:1] == b"\x00" else b"\x00"  # line test echoes; others pass

    def _firmware_version(self, data: bytes) -> bytes:
        self._active_at = self._clock()  # the host initialises the chip: it wakes up fully
        return FIRMWARE

    def _general_status(self, data: bytes) -> bytes:
        return bytes([0x00, int(self._selected), int(self._selected), 0x00])

    def _read_register(self, data: bytes) -> bytes:
        addresses = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]
        return bytes(
            SENS_REQ if addr == CIU_FIFO_DATA else self._registers.get(addr, 0)
            for addr in addresses
        )

    def _write_register(self, data: bytes) -> bytes:
        for i in range(0, len(data) - 2, 3):
            self._registers[int.from_bytes(data[i : i + 2], "big")] = data[i + 2]
        return b""

    def _rf_configuration(self, data: bytes) -> bytes:
        if data[:1] == bytes([RF_CONFIG_FIELD]) and len(data) > 1 and not data[1] & 0x01:
            self._selected = False  # field off: the card loses power and its selection
        return b""

    def _in_list_passive_target(self, data: bytes) -> bytes:
        if self.slow_after_idle_s is not None and (
            self._clock() - self._active_at > self.slow_after_idle_s
        ):
            self._delay += self.slow_poll_s
            self.slow_answers += 1
        if len(data) < 2 or self._card is None or data[1] != 0x00:  # 106 kbps type A only
            return b"\x00"
        uid, sak = self._card
        wanted = data[2:]
        if wanted and wanted != cascade_uid(uid):
            return b"\x00"
        self._delay += self.anticollision_level_s * {4: 1, 7: 2, 10: 3}[len(uid)]
        self._active_at = self._clock()
        self._selected = True
        atqa = bytes([0x00, 0x04 | {4: 0x00, 7: 0x40, 10: 0x80}[len(uid)]])
        return bytes([0x01, 0x01]) + atqa + bytes([sak, len(uid)]) + uid

    def _in_communicate_thru(self, data: bytes) -> bytes:
        if self._card is None or not self._selected:
            return self._silence()
        uid, sak = self._card
        # A Type 2 tag (Ultralight, NTAG) answers READ with four pages. A MIFARE Classic
        # (SAK bit 3) needs authentication first, so it stays silent like the real card.
        if data[:1] == bytes([TT2_READ]) and len(data) == 2 and not sak & 0x08:
            memory = _tt2_memory(uid)
            page = data[1] % (len(memory) // 4)
            block = (memory + memory)[page * 4 : page * 4 + 16]
            return bytes([STATUS_OK]) + block + crc_a(block)
        return self._silence()  # anything else (authenticate, GET_VERSION): no answer

    def _silence(self) -> bytes:
        """The tag stays silent: the chip reports a timeout once its timer has run out."""
        self._delay += self.silent_tag_s
        return bytes([STATUS_TIMEOUT])

    def _power_down(self, data: bytes) -> bytes:
        self._selected = False
        return b"\x00"

    def _accept(self, data: bytes) -> bytes:
        return b""

    _HANDLERS: dict[int, Any] = {
        0x00: _diagnose,
        0x02: _firmware_version,
        0x04: _general_status,
        0x06: _read_register,
        0x08: _write_register,
        0x10: _accept,  # SetSerialBaudrate: a pty runs at any speed
        0x12: _accept,  # SetParameters
        0x14: _accept,  # SAMConfiguration
        0x16: _power_down,
        0x32: _rf_configuration,
        0x4A: _in_list_passive_target,
        0x42: _in_communicate_thru,
    }


def _tt2_memory(uid: bytes) -> bytes:
    """16 pages of a blank NFC Forum Type 2 tag: UID and check bytes, CC, an empty NDEF TLV."""
    if len(uid) == 7:
        bcc0 = CASCADE_TAG ^ uid[0] ^ uid[1] ^ uid[2]
        bcc1 = uid[3] ^ uid[4] ^ uid[5] ^ uid[6]
        head = uid[:3] + bytes([bcc0]) + uid[3:] + bytes([bcc1, 0x48, 0x00, 0x00])
    else:
        head = (uid + bytes(12))[:12]
    capability = bytes([0xE1, 0x10, 0x06, 0x00])
    data = bytes([0x03, 0x00, 0xFE]) + bytes(45)
    return head + capability + data


def frontend_for_pty(path: str) -> Any:
    """nfcpy's real ``pn532`` driver on ``path`` (a pty or any serial path), without root.

    ``tty:`` specs can only name ``/dev/tty*`` entries, so this wires the driver by hand. It is
    :func:`hw.nfc_reader.pn532_frontend`, named for its use with this emulator::

        NfcReader(chip.path, frontend_factory=frontend_for_pty)
    """
    from siteclock.hw.nfc_reader import pn532_frontend  # nfc is imported in hw/nfc_reader.py only

    return pn532_frontend(path)
