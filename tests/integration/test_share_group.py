"""The gateways' share group on a real Mosquitto 2.0: what the broker enforces, what the
secret group name must guard, and a stopped gateway leaving the group.

Mosquitto 2.0's ACL checks a subscription's topic filter and each delivery's topic, never the
``$share/<group>/`` prefix: any client may join any group. What holds:

- a terminal that subscribes to the events of every terminal, shared or not, in a group of its
  own, is granted the subscription and delivered nothing of another terminal's (the read ACL is
  checked at delivery);
- but a terminal that joins *the gateways'* group takes a share of the messages that are then
  refused it at delivery: the group name is the site's secret (0600, never on a terminal), the
  only guard this broker has (docs/scaling.md maps the ACL-enforced equivalents of EMQX and
  HiveMQ);
- a gateway that stops leaves the group (its session ends), so no message is handed to it.
"""

from __future__ import annotations

import asyncio
import stat
import threading
from pathlib import Path

from siteclock.app.loadgen_mqtt import MqttConnection
from siteclock.gateway.link import MqttLink
from siteclock.protocol import Channel, subscription, topic
from tests.support.mosquitto import MosquittoBroker, gateway_config, running_broker
from tests.support.waiting import wait_until

SETTLE_S = 1.0


class Gateway:
    """A gateway's MQTT link in the site's share group, recording the events it gets."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.got: list[bytes] = []
        self._lock = threading.Lock()
        self.link = MqttLink(gateway_config(broker, share_group=broker.share_group))
        self.link.listen(
            [(subscription(Channel.EVENTS, share_group=broker.share_group), 1)], self._on
        )
        self.link.start()
        assert self.link.subscribed.wait(10)

    def _on(self, _topic: str, payload: bytes, mid: int, qos: int) -> None:
        with self._lock:
            self.got.append(payload)
        self.link.ack(mid, qos)


async def _terminal(broker: MosquittoBroker, terminal_id: str, got: list[bytes]) -> MqttConnection:
    return await MqttConnection.open(
        broker.host, broker.port, terminal_id,
        broker.credentials(terminal_id).password, ssl=_ssl(broker),
        on_publish=lambda _t, payload: got.append(payload),
    )  # fmt: skip


def _ssl(broker: MosquittoBroker):
    import ssl

    return ssl.create_default_context(cafile=str(broker.ca_file))


def test_a_terminal_in_a_group_of_its_own_gets_no_one_elses_events(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker", terminals=["t-a", "t-spy"]) as broker:
        gateway = Gateway(broker)
        try:
            spied: list[bytes] = []

            async def play() -> None:
                spy = await _terminal(broker, "t-spy", spied)
                await spy.subscribe(subscription(Channel.EVENTS, share_group="spies"))
                a = await _terminal(broker, "t-a", [])
                for n in range(5):
                    a.publish(topic("t-a", Channel.EVENTS), b"event-%d" % n)
                await asyncio.sleep(SETTLE_S)
                await a.close()
                await spy.close()

            asyncio.run(play())
            assert wait_until(lambda: len(gateway.got) == 5, 10), gateway.got  # the control
            assert spied == []
        finally:
            gateway.link.stop()


def test_the_share_group_name_stays_off_terminals(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker", terminals=["t-a"]) as broker:
        group_file = broker.workdir / "share-group"
        assert group_file.read_text().strip() == broker.share_group
        assert stat.S_IMODE(group_file.stat().st_mode) == 0o600
        terminal_secret = broker.credentials("t-a").password_file.read_text()
        assert broker.share_group not in terminal_secret
        assert broker.share_group not in (broker.workdir / "acl").read_text()


def test_a_stopped_gateway_leaves_the_group(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker", terminals=["t-a"]) as broker:
        staying, leaving = Gateway(broker), Gateway(broker)
        try:
            leaving.link.stop()

            async def play() -> None:
                a = await _terminal(broker, "t-a", [])
                for n in range(10):
                    a.publish(topic("t-a", Channel.EVENTS), b"event-%d" % n)
                await asyncio.sleep(0.2)
                await a.close()

            asyncio.run(play())
            # Every message reaches the gateway still running, none waits for the stopped one.
            assert wait_until(lambda: len(staying.got) == 10, 10), len(staying.got)
        finally:
            staying.link.stop()
