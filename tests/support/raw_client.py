"""A raw MQTT connection holding a terminal's broker credentials: what a stolen terminal's
password gives an attacker (or a buggy terminal). It publishes whatever bytes it is given and
can listen on its own ack topic.

Example::

    evil = Flooder(broker, "t-a", "t-a-evil-twin")
    evil.send(topic("t-a", Channel.EVENTS), [b"garbage"] * 100)   # waits for broker PUBACKs
    evil.close()
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.protocol import Ack, Channel, ProtocolError, topic
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until


class Flooder:
    """A raw MQTT connection that publishes QoS 1 payloads and waits until the broker has them."""

    def __init__(self, broker: MosquittoBroker, user: str, client_id: str) -> None:
        creds = broker.credentials(user)
        self.user = user
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.username_pw_set(creds.username, creds.password)
        self.client.max_inflight_messages_set(200)
        self.acked = 0
        self.stored: set[int] = set()
        """Sequence numbers the gateway acknowledged as stored (after :meth:`listen_acks`)."""
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self.acked += 1

    def _on_message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = Ack.decode(msg.payload)
        except ProtocolError:
            return
        with self._lock:
            self.stored.update(ack.stored)

    def listen_acks(self) -> None:
        """Subscribe to this terminal's ack topic (the ACL allows its own only)."""
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic(self.user, Channel.ACK), qos=1)
        assert done.wait(10), "ack subscription not confirmed"

    def send(self, topic_name: str, payloads: list[bytes], *, retain: bool = False) -> None:
        target = self.acked + len(payloads)
        for payload in payloads:
            self.client.publish(topic_name, payload, qos=1, retain=retain)
        assert wait_until(lambda: self.acked >= target, timeout=60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
