"""``intake``: events per second one gateway process verifies, stores and acknowledges.

100 simulated terminals (each its own broker identity and signing key) each queue live,
single-event messages, as terminals do when they are not catching up. The gateway (an
:class:`Intake` in this process, the only thing measured) first creates its persistent
session, goes offline while the terminals publish, then comes back and works through the
queued messages; the figure is stored-and-acknowledged events over the wall time until the
last application ack is published. Goal: >= 2,000 events/s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.intake import Intake
from gateway.store import Inbox
from gateway.terminals import TerminalRegistry
from siteclock.protocol import (
    GENESIS_HASH,
    Channel,
    ClockState,
    Ed25519Signer,
    Event,
    Kind,
    encode_batch,
    sign_event,
    topic,
)
from tests.support.mosquitto import MosquittoBroker, gateway_config, running_broker

TERMINALS = 100
EVENTS_PER_TERMINAL = 200
WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="bench")


def terminal_ids() -> list[str]:
    return [f"t-sim-{i:03d}" for i in range(TERMINALS)]


def publish_all(broker: MosquittoBroker, tid: str, payloads: list[bytes]) -> None:
    creds = broker.credentials(tid)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=tid, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(broker.ca_file))
    client.username_pw_set(creds.username, creds.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(topic(tid, Channel.EVENTS), p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def run() -> dict:
    tids = terminal_ids()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_broker(root / "broker", terminals=tids) as broker:
            db = root / "gateway.db"
            registry, inbox = TerminalRegistry(db), Inbox(db)
            payloads: dict[str, list[bytes]] = {}
            for tid in tids:
                signer = Ed25519Signer.generate()
                registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
                payloads[tid] = [
                    encode_batch([sign_event(Event(
                        tid, WORKPLACE, seq, GENESIS_HASH, f"{tid}-{seq}", Kind.IN,
                        "nfc-a:04A1B2C3", time.time_ns(), "boot", seq, CLOCK), signer)])
                    for seq in range(1, EVENTS_PER_TERMINAL + 1)
                ]  # fmt: skip
            cfg = gateway_config(broker, client_id="gw-intake-bench")
            first = Intake(cfg, inbox=inbox, registry=registry)
            first.start()  # creates the persistent session and its subscription
            first.stop()
            for tid in tids:
                publish_all(broker, tid, payloads[tid])
            total = TERMINALS * EVENTS_PER_TERMINAL
            intake = Intake(cfg, inbox=inbox, registry=registry)
            started = time.perf_counter()
            intake.start()
            deadline = started + 300
            while intake.stats["acked_events"] < total and time.perf_counter() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            stored, acks = intake.stats["stored"], intake.stats["acks_sent"]
            intake.stop()
            held = inbox.count()
    if held != total:
        raise RuntimeError(f"intake stored {held} of {total}")
    eps = total / elapsed
    return {
        "terminals": TERMINALS,
        "events": total,
        "events_per_s": round(eps),
        "stored": stored,
        "acks_sent": acks,
        "goal": "events_per_s >= 2000",
        "goal_met": eps >= 2000,
    }
