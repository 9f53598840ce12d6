"""``drain``: a terminal's 100,000-event offline backlog, drained to the gateway inbox.

End to end with the real parts: Outbox (SQLite) -> Uplink (batched MQTT 5 QoS 1, TLS) ->
Mosquitto -> Intake (verify, store, PUBACK, application ack) -> ``mark_delivered``. The gateway
runs as its own process (``siteclock gateway --config``), as on a site. Reported
next to the raw paho QoS 1 rate (one small message per PUBACK-ed publish, received by a
subscriber) through the same broker: batching is what lets the drain beat the raw per-message
rate (goal ``drain_ratio_to_raw_qos1`` >= 1.0).

The two are measured interleaved over :data:`bench.rounds.ROUNDS` rounds (:mod:`bench.rounds`):
each round refills the same outbox with another backlog (the chain continues) and drains it
with a fresh uplink, next to one raw run; the figures are the medians, with their spread.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import rounds
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Channel, ClockState, Kind, topic
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.mosquitto import (
    MosquittoBroker,
    running_broker,
    terminal_config,
    write_gateway_toml,
)

EVENTS = 100_000
RAW_MESSAGES = 20_000
RAW_TERMINAL = "t-raw"
WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="bench")


def _client(broker: MosquittoBroker, user: str, client_id: str) -> mqtt.Client:
    creds = broker.credentials(user)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(broker.ca_file))
    client.username_pw_set(creds.username, creds.password)
    client.max_inflight_messages_set(20)  # paho's default, as the uplink uses it
    return client


def raw_qos1_rate(broker: MosquittoBroker, payload_size: int) -> float:
    """Messages/s: paho QoS 1 publisher -> broker -> QoS 1 subscriber, all received.

    The gateway runs through every round, subscribed to every terminal's events, so the raw
    messages take the other direction, on a topic nobody else reads: the gateway's identity
    publishes on the ack topic of a terminal ``t-raw`` that only this subscriber reads. Same
    broker, TLS on both listeners, one PUBACK per message, as before.
    """
    received = threading.Event()
    count = [0]

    def on_message(*_: object) -> None:
        count[0] += 1
        if count[0] >= RAW_MESSAGES:
            received.set()

    name = topic(RAW_TERMINAL, Channel.ACK)
    sub = _client(broker, RAW_TERMINAL, RAW_TERMINAL)
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe(name, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("the raw subscriber was not subscribed within 10 s")
    pub = _client(broker, "siteclock_gateway", "siteclock_gateway-raw-pub")
    pub.connect(broker.host, broker.gateway_port)
    pub.loop_start()
    payload = bytes(payload_size)
    started = time.perf_counter()
    for _ in range(RAW_MESSAGES):
        pub.publish(name, payload, qos=1)
    if not received.wait(300):
        raise RuntimeError(f"raw run received only {count[0]} of {RAW_MESSAGES}")
    elapsed = time.perf_counter() - started
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return RAW_MESSAGES / elapsed


def start_gateway(root: Path, broker: MosquittoBroker) -> subprocess.Popen:
    config = write_gateway_toml(root, broker, "siteclock_gateway-bench")
    proc = subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "gateway", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=(root / "gateway.log").open("wb"),
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while "as siteclock_gateway-bench" not in broker.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the subscription settle
    return proc


def fill(box: Outbox, n: int) -> float:
    """Queue ``n`` taps; returns appends/s. The fill is setup, not what is measured, so the
    fsync per tap is switched off for it (a private handle, on purpose, in a benchmark only)."""
    box._db.execute("PRAGMA synchronous = OFF")
    started = time.perf_counter()
    for _ in range(n):
        box.append(kind=Kind.IN, badge="nfc-a:04A1B2C3", clock=CLOCK)
    box._db.execute("PRAGMA synchronous = FULL")
    return n / (time.perf_counter() - started)


def drain_rate(box: Outbox, broker: MosquittoBroker, counters: dict[str, int]) -> float:
    """Fill ``box`` with a backlog of :data:`EVENTS` taps and drain it; returns events/s."""
    fill(box, EVENTS)
    cfg = terminal_config(broker, "t-bench", heartbeat_s=30.0, resend_after_s=30.0)
    uplink = Uplink(cfg, terminal_id="t-bench", outbox=box, status=dict,
                    on_roster=lambda r: None)  # fmt: skip
    try:
        started = time.perf_counter()
        uplink.start()
        deadline = started + 600
        while box.stats().depth and time.perf_counter() < deadline:
            time.sleep(0.02)  # the figure's resolution: 20 ms in a drain of tens of seconds
        elapsed = time.perf_counter() - started
    finally:
        uplink.stop()
    if box.stats().depth:
        raise RuntimeError(f"drain incomplete: depth {box.stats().depth} of {EVENTS}")
    for name in ("batches_sent", "resends"):
        counters[name] = counters.get(name, 0) + uplink.counters[name]
    counters["max_batch"] = cfg.max_batch
    counters["max_inflight_batches"] = cfg.max_inflight_batches
    return EVENTS / elapsed


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_broker(root / "broker", terminals=["t-bench", RAW_TERMINAL]) as broker:
            signer = Ed25519Signer.generate()
            box = Outbox(root / "outbox.db", signer=signer, terminal_id="t-bench",
                         workplace=WORKPLACE)  # fmt: skip
            box.append(kind=Kind.IN, badge="nfc-a:04A1B2C3", clock=CLOCK)
            event_size = len(box.unsent(limit=1)[0].envelope.body) + 100
            db = root / "gateway.db"
            registry = TerminalRegistry(db)
            registry.register("t-bench", WORKPLACE, public_key=signer.public_key_bytes())
            registry.close()
            gateway = start_gateway(root, broker)
            counters: dict[str, int] = {}
            try:
                rates = rounds.interleaved({
                    "drain": lambda: drain_rate(box, broker, counters),
                    "raw": lambda: raw_qos1_rate(broker, event_size),
                })  # fmt: skip
            finally:
                gateway.terminate()
                gateway.wait(10)
                box.close()
            stored = Inbox(db).count("t-bench")
    expected = 1 + EVENTS * len(rates["drain"])
    if stored != expected:
        raise RuntimeError(f"drain incomplete: gateway stored {stored} of {expected}")
    ratio = rounds.median(rates["drain"]) / rounds.median(rates["raw"])
    return {
        "events": EVENTS,
        "rounds": len(rates["drain"]),
        "max_batch": counters["max_batch"],
        "max_inflight_batches": counters["max_inflight_batches"],
        **rounds.figure("drain_events_per_s", rates["drain"], digits=0),
        **rounds.figure("raw_qos1_msgs_per_s", rates["raw"], digits=0),
        **rounds.ratio_of_medians("drain_ratio_to_raw_qos1", rates["drain"], rates["raw"]),
        "batches_sent": counters["batches_sent"],
        "resends": counters["resends"],
        "goal": "drain_ratio_to_raw_qos1 (ratio of the medians) >= 1.0",
        "goal_met": ratio >= 1.0,
    }
