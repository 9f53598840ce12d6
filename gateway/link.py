"""The gateway's one MQTT connection, shared by everything that talks to terminals.

The intake listens on it (events and heartbeats, acknowledged by hand after they are stored),
and the verdict and roster publishers (:mod:`gateway.verdicts`, :mod:`gateway.roster`) publish
on it. One connection means one broker session, one set of credentials and one TLS handshake
per gateway process, and the ack that the intake sends and the verdict that the relay sends to
a terminal leave in the order they were published.

Example::

    link = MqttLink(cfg.mqtt)
    link.listen([(subscription(Channel.STATUS), 1)], on_message)
    link.start(wait_s=10)
    link.publish(topic("t-hall-01", Channel.ACK), payload)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from siteclock.gateway.config import MqttConfig
from siteclock.log import fields
from siteclock.protocol import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096
"""The MQTT maximum packet size the gateway announces: the largest events payload plus room
for the topic and headers. Smaller messages that break their kind's own limit (a status over
4 KiB) are counted and refused by the intake."""

OnMessage = Callable[[str, bytes, int, int], None]
"""Called on paho's network thread with a message's topic, payload, mid and QoS (not paho's
MQTTMessage, which holds a lock, a condition and MQTT 5 properties per message). A topic that
is not UTF-8 is given as ``""``."""


class Publisher(Protocol):
    """What publishing to terminals needs of a connection: :class:`MqttLink` (or a paho
    client, whose ``publish`` takes the same arguments)."""

    def publish(
        self, topic_name: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> Any: ...


def make_client(cfg: MqttConfig, *, manual_ack: bool) -> mqtt.Client:
    """A paho MQTT 5 client with the gateway's TLS trust and credentials."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.tls:
        client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
    password = cfg.password_file.read_text().strip() if cfg.password_file else None
    client.username_pw_set(cfg.username, password)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


class MqttLink:
    """One paho client: a persistent session (messages queued while away), manual PUBACKs
    (a message is acknowledged only once its consumer says so), subscriptions renewed on
    every (re)connection."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.client = make_client(cfg, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._subscriptions: list[tuple[str, int]] = []
        self._on_message_cb: OnMessage | None = None
        self.subscribed = threading.Event()
        self._started = False
        self.last_refusal: str | None = None
        """The broker's reason for refusing the last login (``Not authorized``...), or None:
        what :mod:`gateway.waits` reports while the gateway waits for the broker."""

    def listen(self, subscriptions: Sequence[tuple[str, int]], on_message: OnMessage) -> None:
        """Subscribe to ``subscriptions`` on each connection and hand what arrives to
        ``on_message``. One listener per link (the intake)."""
        if self._on_message_cb is not None:
            raise RuntimeError("this MQTT link already has a listener")
        self._subscriptions = list(subscriptions)
        self._on_message_cb = on_message

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself); once per link."""
        if self._started:
            return
        self._started = True
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s  # keep queued events while away
        # The broker drops, unsent, anything larger than the largest message of the protocol:
        # an oversized payload then costs the gateway nothing, not even reading it.
        props.MaximumPacketSize = MAX_PACKET_BYTES
        self.client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect. A member of a share group also ends its broker session: a stopped
        gateway whose session lived on would keep its place in the group, and the broker would
        go on handing it a share of the terminals' messages (queued for nobody until the session
        expires; the terminals resend them, late). A gateway alone keeps its session, so what
        arrives while it restarts waits for it."""
        if self.cfg.share_group:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
        else:
            self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    # ------------------------------------------------------------------ traffic

    def publish(self, topic_name: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic_name, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK one received message (the broker redelivers it until then)."""
        self.client.ack(mid, qos)

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.last_refusal = str(rc)
            log.error("broker refused the gateway", extra=fields(reason=str(rc)))
            return
        self.last_refusal = None
        if self._subscriptions:
            client.subscribe(self._subscriptions)
        log.info(
            "gateway connected to the broker",
            extra=fields(host=self.cfg.host, share_group=self.cfg.share_group or "-"),
        )

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        if all(not c.is_failure for c in codes):
            self.subscribed.set()
        else:
            log.error("subscription refused", extra=fields(codes=[str(c) for c in codes]))

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            name = msg.topic
        except UnicodeDecodeError:
            name = ""  # refused as bad_topic by the intake, and PUBACKed like any bad message
        if self._on_message_cb is not None:
            self._on_message_cb(name, msg.payload, msg.mid, msg.qos)
