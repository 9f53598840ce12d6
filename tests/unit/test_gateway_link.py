"""The gateway's publishing side alone: verdicts go out on the link they are given, and the
configuration layer does not pull in the relay."""

from __future__ import annotations

import subprocess
import sys

from siteclock.gateway.verdicts import VerdictPublisher
from siteclock.protocol import Ack, Channel, Outcome, Verdict, topic


class Recorder:
    """Stands in for the MQTT link: what a publisher gave it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic_name: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic_name, payload, qos, retain))


def test_verdicts_go_to_the_terminals_ack_topic_at_qos_1() -> None:
    link = Recorder()
    verdicts = [Verdict(7, Outcome.REGISTERED, ""), Verdict(8, Outcome.REJECTED, "late")]
    VerdictPublisher(link).send("t-hall-01", verdicts)
    [(name, payload, qos, retain)] = link.sent
    assert name == topic("t-hall-01", Channel.ACK)
    assert (qos, retain) == (1, False)
    assert Ack.decode(payload) == Ack(verdicts=tuple(verdicts))


def test_no_verdict_no_message() -> None:
    link = Recorder()
    VerdictPublisher(link).send("t-hall-01", [])
    assert link.sent == []


def test_the_gateway_configuration_does_not_import_the_relay() -> None:
    code = (
        "import sys, siteclock.gateway.config; "
        "print(sorted(m for m in sys.modules if m.startswith('siteclock.gateway.relay')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['siteclock.gateway.relay_config']"
