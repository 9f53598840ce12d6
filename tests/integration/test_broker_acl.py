"""The broker configuration the project generates, enforced by a real Mosquitto.

Terminal A must not publish as terminal B, read B's acks, forge its own roster, or connect
without its credentials; the gateway's identity (and its shared subscription) must work.
Each denial is checked next to a control that is allowed, so a test cannot pass because
nothing was delivered at all.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.gateway.broker import GATEWAY_USER
from siteclock.protocol import Channel, subscription, topic
from tests.support.mosquitto import MosquittoBroker, running_broker

SETTLE_S = 1.0  # time for a message that *would* be delivered to arrive


class Peer:
    """A bare MQTT 5 client over TLS that records what it receives."""

    def __init__(
        self, broker: MosquittoBroker, user: str | None, password: str | None,
        *, port: int | None = None, client_id: str | None = None,
    ) -> None:  # fmt: skip
        self.received: list[tuple[str, bytes]] = []
        self.connect_rc: mqtt.ReasonCode | None = None
        self.granted: list[mqtt.ReasonCode] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"peer-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(ca_certs=str(broker.ca_file))
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        if port is None:  # the gateway has its own listener; terminals use the other
            port = broker.gateway_port if user == GATEWAY_USER else broker.port
        self.client.connect(broker.host, port)
        self.client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, c, u, f, rc, p) -> None:
        self.connect_rc = rc
        self._connected.set()

    def _on_subscribe(self, c, u, mid, codes, p) -> None:
        self.granted = list(codes)
        self._subscribed.set()

    def subscribe(self, name: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(name, qos=1)
        assert self._subscribed.wait(5)

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(name, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    workdir: Path = tmp_path_factory.mktemp("acl") / "broker"
    with running_broker(workdir, terminals=["t-a", "t-b"]) as b:
        yield b


@pytest.fixture
def peers(broker: MosquittoBroker) -> Iterator[dict[str, Peer]]:
    made = {
        name: Peer(broker, broker.credentials(user).username, broker.credentials(user).password)
        for name, user in (("a", "t-a"), ("b", "t-b"), ("gw", "siteclock_gateway"))
    }
    yield made
    for peer in made.values():
        peer.close()


def test_a_terminal_cannot_publish_as_another(peers: dict[str, Peer]) -> None:
    a, gw = peers["a"], peers["gw"]
    gw.subscribe(subscription(Channel.EVENTS))
    gw.subscribe(subscription(Channel.STATUS))
    a.publish(topic("t-b", Channel.EVENTS), b"forged")
    a.publish(topic("t-b", Channel.STATUS), b"forged")
    a.publish(topic("t-a", Channel.EVENTS), b"own")  # the allowed control
    time.sleep(SETTLE_S)
    assert gw.received == [(topic("t-a", Channel.EVENTS), b"own")]


def test_a_terminal_cannot_read_another_terminals_acks(peers: dict[str, Peer]) -> None:
    a, b, gw = peers["a"], peers["b"], peers["gw"]
    a.subscribe(topic("t-b", Channel.ACK))
    a.subscribe(topic("t-a", Channel.ACK))
    b.subscribe(topic("t-b", Channel.ACK))
    gw.publish(topic("t-b", Channel.ACK), b"for b")
    gw.publish(topic("t-a", Channel.ACK), b"for a")
    time.sleep(SETTLE_S)
    assert b.received == [(topic("t-b", Channel.ACK), b"for b")]
    assert a.received == [(topic("t-a", Channel.ACK), b"for a")]


def test_a_terminal_cannot_write_its_own_roster_or_read_events(peers: dict[str, Peer]) -> None:
    a, b = peers["a"], peers["b"]
    a.subscribe(topic("t-a", Channel.CONFIG))
    a.publish(topic("t-a", Channel.CONFIG), b"self-made roster", retain=True)
    b.subscribe(subscription(Channel.EVENTS))
    a.publish(topic("t-a", Channel.EVENTS), b"event")
    time.sleep(SETTLE_S)
    assert a.received == []
    assert b.received == []


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("t-a", "wrong password"), ("t-zz", "anything"), ("siteclock_gateway", "")],
)
def test_no_connection_without_valid_credentials(
    broker: MosquittoBroker, user: str | None, password: str | None
) -> None:
    peer = Peer(broker, user, password)
    try:
        assert peer.connect_rc is not None
        assert peer.connect_rc.is_failure
        assert not peer.client.is_connected()
    finally:
        peer.close()


def plain_mqtt_connects(broker: MosquittoBroker) -> bool:
    """Try MQTT without TLS on the TLS port with valid credentials; True if it got in."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    creds = broker.credentials("t-a")
    client.username_pw_set(creds.username, creds.password)
    try:
        client.connect(broker.host, broker.port, keepalive=5)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not client.is_connected():
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                return False
        return client.is_connected()
    except (OSError, ssl.SSLError):
        return False
    finally:
        client.disconnect()


def test_the_tls_port_refuses_plain_mqtt(broker: MosquittoBroker) -> None:
    assert plain_mqtt_connects(broker) is False


def test_a_revoked_terminal_can_no_longer_connect(broker: MosquittoBroker) -> None:
    creds = broker.add_terminal("t-gone")
    before = Peer(broker, creds.username, creds.password)
    try:
        assert before.connect_rc is not None
        assert not before.connect_rc.is_failure
    finally:
        before.close()
    broker.revoke_terminal("t-gone")
    after = Peer(broker, creds.username, creds.password)
    try:
        assert after.connect_rc is not None
        assert after.connect_rc.is_failure
    finally:
        after.close()


def test_the_gateway_may_use_a_shared_subscription(peers: dict[str, Peer]) -> None:
    a, gw = peers["a"], peers["gw"]
    gw.subscribe(subscription(Channel.EVENTS, share_group="intake"))
    assert all(not code.is_failure for code in gw.granted)
    a.publish(topic("t-a", Channel.EVENTS), b"shared")
    time.sleep(SETTLE_S)
    assert (topic("t-a", Channel.EVENTS), b"shared") in gw.received
