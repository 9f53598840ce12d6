"""A stolen terminal's credentials against a real Mosquitto configured by ``broker-config``.

Each test is one finding of the security review (issue 9), played by a hostile client with a
terminal's valid username and password, next to a control that shows the honest path still
works (so a test cannot pass because nothing was delivered at all).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from siteclock.gateway.broker import GATEWAY_USER, MAX_PACKET_BYTES, TLS12_CIPHERS
from siteclock.protocol import Channel, subscription, topic
from tests.support.mosquitto import MosquittoBroker, running_broker
from tests.support.waiting import wait_for

SETTLE_S = 1.0  # time for a message that *would* be delivered to arrive


class Client:
    """A bare MQTT 5 client over TLS that records connects, disconnects and messages."""

    def __init__(
        self, broker: MosquittoBroker, user: str, *, client_id: str, port: int | None = None,
        clean_start: bool = True, session_expiry_s: int = 0, password: str | None = None,
    ) -> None:  # fmt: skip
        self.received: list[tuple[str, bytes]] = []
        self.connects: list[mqtt.ReasonCode] = []
        self.disconnects: list[mqtt.ReasonCode] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set(ca_certs=str(broker.ca_file))
        if password is None:
            password = broker.credentials(user).password
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.connects.append(rc)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        if port is None:
            port = broker.gateway_port if user == GATEWAY_USER else broker.port
        self.client.reconnect_delay_set(5, 5)  # a kicked client must not race straight back
        self.client.connect(broker.host, port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        wait_for(lambda: bool(self.connects), what=f"CONNACK for {user}/{client_id}")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, msg.payload))

    @property
    def refused(self) -> bool:
        return self.connects[0].is_failure

    def subscribe(self, name: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(name, qos=1)
        assert done.wait(5)

    def publish(self, name: str, payload: bytes) -> None:
        self.client.publish(name, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    workdir: Path = tmp_path_factory.mktemp("hostile") / "broker"
    with running_broker(workdir, terminals=["t-a", "t-b"]) as b:
        yield b


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def test_a_terminal_cannot_take_over_the_gateways_or_another_terminals_client_id(
    broker: MosquittoBroker, clients: list[Client]
) -> None:
    gateway = Client(broker, GATEWAY_USER, client_id="siteclock_gateway-hostile")
    victim = Client(broker, "t-b", client_id="t-b")
    clients += [gateway, victim]
    gateway.subscribe(subscription(Channel.EVENTS))
    # The thief presents the gateway's client id, then the other terminal's.
    thief = Client(broker, "t-a", client_id="siteclock_gateway-hostile")
    thief2 = Client(broker, "t-a", client_id="t-b")
    clients += [thief, thief2]
    time.sleep(SETTLE_S)
    assert gateway.disconnects == []
    assert victim.disconnects == []
    # Both owners are still in place and working: the gateway still gets t-b's events.
    victim.publish(topic("t-b", Channel.EVENTS), b"still here")
    wait_for(
        lambda: (topic("t-b", Channel.EVENTS), b"still here") in gateway.received,
        what="the victim's event at the gateway",
    )
    assert "as t-a" in broker.log_tail(200)  # the broker named the thief by its username


def test_a_terminal_cannot_resume_the_gateways_persistent_session(
    broker: MosquittoBroker, clients: list[Client]
) -> None:
    cid = "siteclock_gateway-persistent"
    gateway = Client(broker, GATEWAY_USER, client_id=cid, clean_start=False, session_expiry_s=600)
    gateway.subscribe(subscription(Channel.EVENTS))
    gateway.close()  # the gateway restarts: its session keeps queueing for it
    terminal = Client(broker, "t-a", client_id="t-a")
    clients.append(terminal)
    for n in range(5):
        terminal.publish(topic("t-a", Channel.EVENTS), b"queued %d" % n)
    # The thief asks for the gateway's session by its client id, over the terminal listener...
    thief = Client(broker, "t-a", client_id=cid, clean_start=False, session_expiry_s=600)
    clients.append(thief)
    time.sleep(SETTLE_S)
    assert thief.received == []
    # ... and the gateway's own listener does not know a terminal's password at all.
    intruder = Client(broker, "t-a", client_id=cid, port=broker.gateway_port, clean_start=False)
    clients.append(intruder)
    assert intruder.refused
    back = Client(broker, GATEWAY_USER, client_id=cid, clean_start=False, session_expiry_s=600)
    clients.append(back)
    wait_for(lambda: len(back.received) == 5, what="the 5 events queued for the gateway")


def test_the_gateway_cannot_log_in_on_the_terminals_listener(
    broker: MosquittoBroker, clients: list[Client]
) -> None:
    stray = Client(broker, GATEWAY_USER, client_id="siteclock_gateway-x", port=broker.port)
    clients.append(stray)
    assert stray.refused


def test_a_terminal_in_a_share_group_does_not_swallow_events(
    broker: MosquittoBroker, clients: list[Client]
) -> None:
    gateway = Client(broker, GATEWAY_USER, client_id="siteclock_gateway-shared")
    clients.append(gateway)
    gateway.subscribe(subscription(Channel.EVENTS, share_group=broker.share_group))
    thief = Client(broker, "t-b", client_id="t-b")
    clients.append(thief)
    # Mosquitto 2.0 grants any subscription (its ACL is checked on delivery only): the thief
    # joins every group it can name. The site's group name is a secret it does not have.
    for group in ("intake", "siteclock", "gateway", "siteclock_gateway"):
        thief.subscribe(subscription(Channel.EVENTS, share_group=group))
    sender = Client(broker, "t-a", client_id="t-a")
    clients.append(sender)
    for n in range(20):
        sender.publish(topic("t-a", Channel.EVENTS), b"e%d" % n)
    wait_for(lambda: len(gateway.received) == 20, what="all 20 events at the gateway")
    assert thief.received == []


def test_an_oversize_publish_is_refused_and_the_sender_disconnected(
    broker: MosquittoBroker, clients: list[Client]
) -> None:
    gateway = Client(broker, GATEWAY_USER, client_id="siteclock_gateway-size")
    clients.append(gateway)
    gateway.subscribe(subscription(Channel.EVENTS))
    thief = Client(broker, "t-a", client_id="t-a")
    clients.append(thief)
    thief.client.publish(topic("t-a", Channel.EVENTS), bytes(MAX_PACKET_BYTES + 1), qos=1)
    wait_for(lambda: bool(thief.disconnects), what="the broker to disconnect the sender")
    honest = Client(broker, "t-b", client_id="t-b")
    clients.append(honest)
    honest.publish(topic("t-b", Channel.EVENTS), b"small")
    wait_for(
        lambda: (topic("t-b", Channel.EVENTS), b"small") in gateway.received,
        what="an honest small event at the gateway",
    )
    assert all(len(payload) <= MAX_PACKET_BYTES for _, payload in gateway.received)


def tls12_handshake(port: int, ciphers: str, ca_file: Path) -> bool:
    """Whether a TLS 1.2-only client offering only ``ciphers`` completes a handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except (ssl.SSLError, OSError):
        return False


@pytest.mark.parametrize("listener", ["port", "gateway_port"])
def test_tls12_cbc_suites_are_refused(broker: MosquittoBroker, listener: str) -> None:
    port = getattr(broker, listener)
    cbc = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256"
    assert tls12_handshake(port, cbc, broker.ca_file) is False
    assert tls12_handshake(port, TLS12_CIPHERS, broker.ca_file) is True  # control


def test_a_newline_in_a_terminal_id_never_reaches_the_password_file(
    broker: MosquittoBroker,
) -> None:
    before = (broker.workdir / "passwd").read_bytes()
    for bad in ("t-evil\n", "t-evil\nsiteclock_gateway:$7$1$AA==$AA==", "siteclock-gw"):
        with pytest.raises(ValueError, match="terminal id"):
            broker.add_terminal(bad)
        broker.terminals.remove(bad)
    assert (broker.workdir / "passwd").read_bytes() == before
    # The broker still reads its file: a real terminal logs in.
    honest = Client(broker, "t-a", client_id="t-a")
    try:
        assert not honest.refused
    finally:
        honest.close()
