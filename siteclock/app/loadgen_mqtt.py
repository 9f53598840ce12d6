"""The least MQTT 3.1.1 a simulated terminal needs, on asyncio: thousands in one event loop.

paho-mqtt costs a thread (or a loop object and ~100 us of Python) per connection, which does
not fit 20,000 terminals on two cores; a simulated terminal only ever connects with a
password, subscribes to its ack topic, publishes QoS 1 and answers PUBACKs and pings, so this
module speaks exactly that and nothing else (no QoS 2, no will, no MQTT 5 properties). Real
terminals keep paho (:mod:`siteclock.terminal.uplink`); this is load-generation only.

Example::

    conn = await MqttConnection.open(host, port, "t-0001", password, ssl=ctx,
                                     on_publish=lambda topic, payload: ...)
    await conn.subscribe("siteclock/v1/t-0001/ack")
    conn.publish("siteclock/v1/t-0001/events", payload, qos=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import struct
from collections.abc import Callable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
MAX_REMAINING = 268_435_455  # the largest length MQTT's variable-length integer can say


class MqttError(Exception):
    """The broker refused or broke the connection (the message says how)."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """One MQTT control packet: fixed header (kind, flags, remaining length) then ``body``."""
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def connect_packet(client_id: str, username: str, password: str, keepalive_s: int) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session (the outbox is ours)
    head = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s)
    return packet(CONNECT, 0, head + _text(client_id) + _text(username) + _text(password))


def publish_packet(topic: str, payload: bytes, *, qos: int, mid: int, retain: bool) -> bytes:
    ident = struct.pack("!H", mid) if qos else b""
    return packet(PUBLISH, qos << 1 | int(retain), _text(topic) + ident + payload)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(kind, flags, body) of the next packet; raises IncompleteReadError at end of stream."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        digit = (await reader.readexactly(1))[0]
        length += (digit & 0x7F) << shift
        if not digit & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MqttError("malformed remaining length from the broker")
    return first >> 4, first & 0x0F, await reader.readexactly(length)


OnPublish = Callable[[str, bytes], None]
OnPuback = Callable[[int], None]


class MqttConnection:
    """One broker connection: a reader task dispatching PUBLISH (QoS 0/1, PUBACKed at once)
    and PUBACK, a keepalive ping, and :meth:`publish` that only queues bytes on the socket."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_publish: OnPublish,
        on_puback: OnPuback | None,
        keepalive_s: int,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._on_publish, self._on_puback = on_publish, on_puback
        self._keepalive_s = keepalive_s
        self._next_mid = 0
        self._suback: asyncio.Future[bytes] | None = None
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        on_publish: OnPublish,
        on_puback: OnPuback | None = None,
        ssl: ssl_module.SSLContext | None = None,
        keepalive_s: int = 60,
        timeout_s: float = 30.0,
    ) -> MqttConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl, server_hostname=host if ssl else None),
            timeout_s,
        )
        writer.write(connect_packet(username, username, password, keepalive_s))
        try:
            kind, _, body = await asyncio.wait_for(read_packet(reader), timeout_s)
        except (asyncio.IncompleteReadError, TimeoutError) as exc:
            writer.close()
            raise MqttError(f"no CONNACK from {host}:{port} ({type(exc).__name__})") from None
        if kind != CONNACK or len(body) < 2 or body[1] != 0:
            writer.close()
            code = body[1] if kind == CONNACK and len(body) > 1 else -1
            raise MqttError(f"broker refused {username!r} (CONNACK code {code})")
        conn = cls(reader, writer, on_publish, on_puback, keepalive_s)
        conn._tasks = [
            asyncio.create_task(conn._read_loop()),
            asyncio.create_task(conn._ping_loop()),
        ]
        return conn

    def _mid(self) -> int:
        self._next_mid = self._next_mid % 65535 + 1
        return self._next_mid

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._suback = asyncio.get_running_loop().create_future()
        body = struct.pack("!H", self._mid()) + _text(topic_filter) + bytes([qos])
        self._writer.write(packet(SUBSCRIBE, 0x02, body))
        granted = await asyncio.wait_for(self._suback, 30.0)
        if granted[-1] == 0x80:
            raise MqttError(f"subscription to {topic_filter!r} refused")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue one PUBLISH; returns its packet id (0 for QoS 0). Never waits."""
        if self.closed.is_set():
            raise MqttError("connection closed")
        mid = self._mid() if qos else 0
        self._writer.write(publish_packet(topic, payload, qos=qos, mid=mid, retain=retain))
        return mid

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, flags, body = await read_packet(self._reader)
                if kind == PUBLISH:
                    (size,) = struct.unpack_from("!H", body)
                    topic = body[2 : 2 + size].decode()
                    rest = body[2 + size :]
                    if flags >> 1 & 0x03:
                        self._writer.write(packet(PUBACK, 0, rest[:2]))
                        rest = rest[2:]
                    self._on_publish(topic, rest)
                elif kind == PUBACK and self._on_puback is not None:
                    self._on_puback(struct.unpack("!H", body[:2])[0])
                elif kind == SUBACK and self._suback is not None and not self._suback.done():
                    self._suback.set_result(body[2:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError, MqttError):
            pass
        finally:
            self._shutdown()

    async def _ping_loop(self) -> None:
        try:
            while not self.closed.is_set():
                await asyncio.sleep(self._keepalive_s / 2)
                self._writer.write(packet(PINGREQ, 0, b""))
        except (ConnectionError, OSError):
            self._shutdown()

    def _shutdown(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._writer.close()

    async def close(self) -> None:
        """DISCONNECT and close (no will is ever set, so this is only tidiness)."""
        if not self.closed.is_set():
            with contextlib.suppress(ConnectionError, OSError):
                self._writer.write(packet(DISCONNECT, 0, b""))
        self._shutdown()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
