"""``intake``: events per second one gateway process verifies, stores and acknowledges.

100 simulated terminals (each its own broker identity, TLS connection and Ed25519 key) send
live, single-event messages, as terminals do when they are not catching up. They are spread
over :data:`SENDERS` processes that publish round-robin, one event per terminal in turn, so
the broker holds the terminals' messages interleaved as live traffic arrives (a group of
messages then names many terminals, and the gateway sends many small acks).

The gateway (an :class:`Intake` in this process, the only thing measured) first creates its
persistent session, goes offline while the terminals publish, then comes back and works
through the queued messages; the figure is stored-and-acknowledged events over the wall time
until the last application ack is published. Sending while the gateway is offline keeps the
sender off the 2 cores while the gateway is measured; the senders' own rate (events/s from
first publish to last broker PUBACK, nothing else running) is reported as
``sender_events_per_s``, so a reader can see the sender is not what limits the figure.

Each of :data:`bench.rounds.ROUNDS` rounds (:mod:`bench.rounds`) sends another
:data:`EVENTS_PER_TERMINAL` events per terminal (the chains continue) and measures the senders,
then the gateway working through them; the figures are the medians over the rounds, with
their spread, and ``ratio_to_sender`` the ratio of the medians.
Goal: events_per_s >= 2,000.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import rounds
from siteclock.gateway.intake import Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    GENESIS_HASH,
    Channel,
    ClockState,
    Event,
    Kind,
    encode_batch,
    sign_event,
    topic,
)
from tests.support.mosquitto import gateway_config, running_broker

TERMINALS = 100
EVENTS_PER_TERMINAL = 200
SENDERS = 4  # processes, each driving TERMINALS / SENDERS MQTT clients
WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="bench")


def terminal_ids() -> list[str]:
    return [f"t-sim-{i:03d}" for i in range(TERMINALS)]


class Chain:
    """One terminal's signed, chained events, continued across calls (and benchmark runs)."""

    def __init__(self, tid: str, signer: Ed25519Signer) -> None:
        self.tid, self.signer = tid, signer
        self.seq, self.prev = 0, GENESIS_HASH

    def payloads(self, count: int) -> list[bytes]:
        """The next ``count`` events, each signed and alone in one MQTT payload."""
        out = []
        for _ in range(count):
            self.seq += 1
            event = Event(
                self.tid, WORKPLACE, self.seq, self.prev, f"{self.tid}-{self.seq}", Kind.IN,
                "nfc-a:04A1B2C3", time.time_ns(), "boot", self.seq, CLOCK,
            )  # fmt: skip
            signed = sign_event(event, self.signer)
            self.prev = signed.digest
            out.append(encode_batch([signed]))
        return out


def connect(broker: dict[str, Any], tid: str, password: str) -> mqtt.Client:
    """A terminal's MQTT connection (TLS, its own credentials), its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=tid, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=broker["ca_file"])
    client.username_pw_set(tid, password)
    client.max_inflight_messages_set(1000)
    client.connect(broker["host"], broker["port"])
    client.loop_start()
    return client


def send(
    broker: dict[str, Any],
    terminals: list[tuple[str, str, list[bytes]]],
    ready: Barrier,
    results: Any,
) -> None:
    """One sender process: connect its terminals (id, password, signed payloads), wait for the
    others, then publish round-robin and wait for every PUBACK.
    Puts ``(first publish, last PUBACK, published)`` on ``results`` (monotonic times)."""
    clients, payloads = [], []
    for tid, password, signed in terminals:
        clients.append((connect(broker, tid, password), topic(tid, Channel.EVENTS)))
        payloads.append(signed)
    ready.wait()  # every sender connected; the parent then says go
    ready.wait()
    started = time.monotonic()
    infos = [
        client.publish(name, payloads[i][n], qos=1)
        for n in range(len(payloads[0]))
        for i, (client, name) in enumerate(clients)
    ]
    for info in infos:
        info.wait_for_publish(60)
    finished = time.monotonic()
    for client, _ in clients:
        client.disconnect()
        client.loop_stop()
    results.put((started, finished, sum(1 for i in infos if i.is_published())))


class IntakeBench:
    """The broker, the terminals and the gateway's store, kept across rounds."""

    def __init__(self, root: Path, broker: Any) -> None:
        self.ctx = multiprocessing.get_context("spawn")  # no fork of a process holding SQLite
        self.broker = broker
        db = root / "gateway.db"
        self.registry, self.inbox = TerminalRegistry(db), Inbox(db)
        self.chains: list[Chain] = []
        for tid in terminal_ids():
            signer = Ed25519Signer.generate()
            self.registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
            self.chains.append(Chain(tid, signer))
        self.where = {"host": broker.host, "port": broker.port, "ca_file": str(broker.ca_file)}
        self.cfg = gateway_config(broker, client_id="siteclock_gateway-intake-bench")
        first = Intake(self.cfg, inbox=self.inbox, registry=self.registry)
        first.start()  # creates the persistent session and its subscription
        first.stop()
        self.stored = self.acks = 0

    def round(self) -> dict[str, float]:
        """The senders publish while the gateway is away; then the gateway works through it."""
        terminals = [
            (c.tid, self.broker.credentials(c.tid).password, c.payloads(EVENTS_PER_TERMINAL))
            for c in self.chains
        ]
        ready, results = self.ctx.Barrier(SENDERS + 1), self.ctx.Queue()
        senders = [
            self.ctx.Process(target=send, args=(self.where, terminals[i::SENDERS], ready, results))
            for i in range(SENDERS)
        ]
        for proc in senders:
            proc.start()
        ready.wait(120)  # senders ready
        ready.wait(120)  # go
        spans = [results.get(timeout=300) for _ in senders]
        for proc in senders:
            proc.join(30)
        total = TERMINALS * EVENTS_PER_TERMINAL
        published = sum(n for _, _, n in spans)
        if published != total:
            raise RuntimeError(f"senders published {published} of {total}")
        sender_eps = total / (max(f for _, f, _ in spans) - min(s for s, _, _ in spans))
        held_before = self.inbox.count()
        intake = Intake(self.cfg, inbox=self.inbox, registry=self.registry)
        started = time.perf_counter()
        intake.start()
        deadline = started + 300
        while intake.stats["acked_events"] < total and time.perf_counter() < deadline:
            time.sleep(0.01)  # the figure's resolution: 10 ms in a run of seconds
        elapsed = time.perf_counter() - started
        self.stored += intake.stats["stored"]
        self.acks += intake.stats["acks_sent"]
        intake.stop()
        held = self.inbox.count() - held_before
        if held != total:
            raise RuntimeError(f"intake stored {held} of {total}")
        return {"intake": total / elapsed, "sender": sender_eps}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_broker(root / "broker", terminals=terminal_ids()) as broker:
            bench = IntakeBench(root, broker)
            # The gateway can only work through what the senders sent, so both are measured
            # in every round, in that order.
            runs = rounds.interleaved({"round": bench.round})["round"]
    intake = [r["intake"] for r in runs]
    sender = [r["sender"] for r in runs]
    eps = rounds.median(intake)
    return {
        "terminals": TERMINALS,
        "events": TERMINALS * EVENTS_PER_TERMINAL,
        "rounds": len(runs),
        **rounds.figure("events_per_s", intake, digits=0),
        "stored": bench.stored,
        "acks_sent": bench.acks,
        "sender_processes": SENDERS,
        **rounds.figure("sender_events_per_s", sender, digits=0),
        **rounds.ratio_of_medians("ratio_to_sender", intake, sender),
        "goal": "events_per_s >= 2000",
        "goal_met": eps >= 2000,
    }
