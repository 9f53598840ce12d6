"""Telling terminals the NSSO's verdicts: the relay's final verdict for an event, published on
the terminal's own ack topic (QoS 1) through the gateway's MQTT link. The terminal records it
idempotently and shows it with the worker's next tap.

Example::

    verdicts = VerdictPublisher(link)
    verdicts.send("t-hall-01", [Verdict(7, Outcome.REGISTERED)])
"""

from __future__ import annotations

from collections.abc import Sequence

from siteclock.gateway.link import Publisher
from siteclock.protocol import Ack, Channel, Verdict, topic


class VerdictPublisher:
    def __init__(self, link: Publisher) -> None:
        self._link = link

    def send(self, terminal_id: str, verdicts: Sequence[Verdict]) -> None:
        """Publish ``verdicts`` to one terminal; nothing when there are none."""
        if verdicts:
            payload = Ack(verdicts=tuple(verdicts)).encode()
            self._link.publish(topic(terminal_id, Channel.ACK), payload, qos=1)
