"""A Type 2 tag answering nfcpy's ``udp`` driver: the card side of the RF exchange.

nfcpy's udp device sends ``b"<bitrate/type> <hex>"`` datagrams (``106A 26`` is REQA) and takes
the datagram that comes back as the card's answer. This tag plays anticollision for 4- and
7-byte UIDs and answers READ, so nfcpy can read its UID and check that it stays present.
"""

from __future__ import annotations

import functools
import operator
import socket
import threading

BRTY = b"106A"
REQA, SEL_CL1, SEL_CL2 = 0x26, 0x93, 0x95
CASCADE_TAG = 0x88


def _bcc(data: bytes) -> int:
    return functools.reduce(operator.xor, data, 0)


class UdpTag:
    """Listens on 127.0.0.1 (an ephemeral port); :attr:`path` is the nfcpy device path."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.path = f"udp:127.0.0.1:{self._sock.getsockname()[1]}"
        self._lock = threading.Lock()
        self._uid: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="udp-tag", daemon=True)
        self._thread.start()

    def place(self, uid: bytes) -> None:
        assert len(uid) in (4, 7)
        with self._lock:
            self._uid = uid

    def remove(self) -> None:
        with self._lock:
            self._uid = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _answer(self, cmd: bytes) -> bytes | None:
        with self._lock:
            uid = self._uid
        if uid is None or not cmd:
            return None
        levels = [uid] if len(uid) == 4 else [bytes([CASCADE_TAG]) + uid[:3], uid[3:]]
        if cmd == bytes([REQA]):
            return bytes([0x04 if len(uid) == 4 else 0x44, 0x00])
        for level, sel in enumerate((SEL_CL1, SEL_CL2)[: len(levels)]):
            part = levels[level] + bytes([_bcc(levels[level])])
            last = level == len(levels) - 1
            if cmd == bytes([sel, 0x20]):  # anticollision: the UID part and its check byte
                return part
            if cmd == bytes([sel, 0x70]) + part:  # select: SAK, bit 2 set while UID goes on
                return bytes([0x00 if last else 0x04])
        if cmd[0] == 0x30 and len(cmd) == 2:  # READ four pages
            return (uid + bytes(16))[:16]
        return None  # anything else: no answer, like a real tag

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, addr = self._sock.recvfrom(1024)
            except (TimeoutError, OSError):
                continue
            brty, _, data = packet.partition(b" ")
            if brty != BRTY:  # RFOFF, other technologies
                continue
            answer = self._answer(bytes.fromhex(data.decode()))
            if answer is not None:
                self._sock.sendto(BRTY + b" " + answer.hex().encode(), addr)
