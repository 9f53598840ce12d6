"""``drain``: a terminal's 100,000-event offline backlog, drained to the gateway inbox.

End to end with the real parts: Outbox (SQLite) -> Uplink (batched MQTT 5 QoS 1, TLS) ->
Mosquitto -> Intake (verify, store, PUBACK, application ack) -> ``mark_delivered``. The gateway
runs as its own process (``siteclock gateway --config``), as on a site. Reported
next to the raw paho QoS 1 rate (one small message per PUBACK-ed publish, received by a
subscriber) through the same broker in the same run: batching is what lets the drain beat
the raw per-message rate (goal ``drain_ratio_to_raw_qos1`` >= 1.0).
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
)

EVENTS = 100_000
RAW_MESSAGES = 20_000
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
    """Messages/s: paho QoS 1 publisher -> broker -> QoS 1 subscriber, all received."""
    received = threading.Event()
    count = [0]

    def on_message(*_: object) -> None:
        count[0] += 1
        if count[0] >= RAW_MESSAGES:
            received.set()

    sub = _client(broker, "siteclock_gateway", "raw-sub")
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(broker.host, broker.gateway_port)
    sub.loop_start()
    sub.subscribe(topic("t-bench", Channel.EVENTS), qos=1)
    subscribed.wait(10)
    pub = _client(broker, "t-bench", "raw-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    payload = bytes(payload_size)
    started = time.perf_counter()
    for _ in range(RAW_MESSAGES):
        pub.publish(topic("t-bench", Channel.EVENTS), payload, qos=1)
    if not received.wait(300):
        raise RuntimeError(f"raw run received only {count[0]} of {RAW_MESSAGES}")
    elapsed = time.perf_counter() - started
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return RAW_MESSAGES / elapsed


def start_gateway(root: Path, broker: MosquittoBroker) -> subprocess.Popen:
    config = root / "gateway.toml"
    config.write_text(
        f'db = "{root / "gateway.db"}"\n'
        f'signing_key_file = "{root / "gateway-signing.key"}"\n'
        f'inss_key_file = "{root / "inss.key"}"\n'
        'log_level = "WARNING"\n'
        "[mqtt]\n"
        f'host = "{broker.host}"\nport = {broker.gateway_port}\n'
        f'ca_file = "{broker.ca_file}"\n'
        f'password_file = "{broker.gateway.password_file}"\n'
        'client_id = "siteclock_gateway-bench"\n'
    )
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


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_broker(root / "broker", terminals=["t-bench"]) as broker:
            signer = Ed25519Signer.generate()
            box = Outbox(root / "outbox.db", signer=signer, terminal_id="t-bench",
                         workplace=WORKPLACE)  # fmt: skip
            fill(box, EVENTS)
            event_size = len(box.unsent(limit=1)[0].envelope.body) + 100
            raw = raw_qos1_rate(broker, event_size)

            db = root / "gateway.db"
            registry = TerminalRegistry(db)
            registry.register("t-bench", WORKPLACE, public_key=signer.public_key_bytes())
            registry.close()
            gateway = start_gateway(root, broker)
            cfg = terminal_config(broker, "t-bench", heartbeat_s=30.0, resend_after_s=30.0)
            uplink = Uplink(cfg, terminal_id="t-bench", outbox=box, status=dict,
                            on_roster=lambda r: None)  # fmt: skip
            try:
                started = time.perf_counter()
                uplink.start()
                deadline = started + 600
                while box.stats().depth and time.perf_counter() < deadline:
                    time.sleep(0.02)
                elapsed = time.perf_counter() - started
                depth = box.stats().depth
            finally:
                uplink.stop()
                gateway.terminate()
                gateway.wait(10)
                box.close()
            stored = Inbox(db).count("t-bench")
    if depth or stored != EVENTS:
        raise RuntimeError(f"drain incomplete: depth {depth}, stored {stored} of {EVENTS}")
    drain = EVENTS / elapsed
    ratio = drain / raw
    return {
        "events": EVENTS,
        "max_batch": cfg.max_batch,
        "max_inflight_batches": cfg.max_inflight_batches,
        "drain_events_per_s": round(drain),
        "raw_qos1_msgs_per_s": round(raw),
        "drain_ratio_to_raw_qos1": round(ratio, 2),
        "batches_sent": uplink.counters["batches_sent"],
        "resends": uplink.counters["resends"],
        "goal": "drain_ratio_to_raw_qos1 >= 1.0",
        "goal_met": ratio >= 1.0,
    }
