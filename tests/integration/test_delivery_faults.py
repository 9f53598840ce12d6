"""Fault injection with a history checker: every tapped event is stored exactly once.

Real parts throughout: Mosquitto with the project's config (killed with SIGKILL and restarted),
the gateway as a subprocess (``siteclock gateway --config``, killed with SIGKILL and restarted),
terminals with real Outbox + Uplink (two in this process, one in a subprocess that is killed and
restarted on the same outbox file), and an in-process TCP proxy between terminals and broker that
cuts and restores the network. Terminals keep tapping through every fault.

The checker then classifies each committed event (terminal, seq, event_id), read back from each
terminal's own outbox, against the gateway's inbox as *stored*, *lost* or *duplicated*, and
finds anything *unexpected* in the inbox. It requires lost = duplicated = unexpected = 0 and
every outbox drained (depth 0) once the faults stop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Kind
from siteclock.terminal.config import UplinkConfig
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.history import (
    CLOCK,
    TAP_INTERVAL_S,
    WORKPLACE,
    Tapper,
    classify,
    make_tapper,
    saved_histories,
)
from tests.support.mosquitto import (
    MosquittoBroker,
    running_broker,
    terminal_config,
    write_gateway_toml,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

IN_PROCESS = ["t-f1", "t-f2"]
KILLED = "t-f3"


# ---------------------------------------------------------------------- a terminal process


def terminal_main(argv: list[str]) -> None:
    """Run one terminal (outbox + uplink) in its own process: tap, then drain, then exit."""
    spec = json.loads(argv[0])
    signer = Ed25519Signer.from_private_bytes(Path(spec["key"]).read_bytes())
    box = Outbox(Path(spec["db"]), signer=signer, terminal_id=spec["tid"], workplace=WORKPLACE)
    paths = {k: Path(v) for k, v in spec["cfg"].items() if k.endswith("_file") and v is not None}
    cfg = UplinkConfig(**{**spec["cfg"], **paths})
    up = Uplink(cfg, terminal_id=spec["tid"], outbox=box, status=dict, on_roster=lambda r: None,
                reconnect_max_s=1)  # fmt: skip
    up.start()
    for _ in range(spec["taps"]):
        box.append(kind=Kind.IN, badge="nfc-a:0F", clock=CLOCK)
        up.wake()
        time.sleep(TAP_INTERVAL_S)
    wait_until(lambda: box.stats().depth == 0, timeout=600)  # the parent's checks time it out
    up.stop()
    box.close()


def start_terminal_process(root: Path, cfg: UplinkConfig, key: Path, taps: int) -> subprocess.Popen:
    spec = {
        "tid": KILLED, "db": str(root / f"{KILLED}.db"), "key": str(key), "taps": taps,
        "cfg": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
    }  # fmt: skip
    code = (
        "import sys; from tests.integration.test_delivery_faults import terminal_main; "
        "terminal_main(sys.argv[1:])"
    )
    log = (root / f"{KILLED}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip


# ---------------------------------------------------------------------- the gateway process


def start_gateway(root: Path, config: Path) -> subprocess.Popen:
    log = (root / "gateway.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "gateway", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def sigkill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def test_no_event_is_lost_or_duplicated_through_crashes_and_partitions(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker", terminals=[*IN_PROCESS, KILLED]) as broker:
        run_faults(tmp_path, broker)


def run_faults(root: Path, broker: MosquittoBroker) -> None:
    db = root / "gateway.db"
    registry = TerminalRegistry(db)
    signers = {tid: Ed25519Signer.generate() for tid in [*IN_PROCESS, KILLED]}
    for tid, signer in signers.items():
        registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
    registry.close()
    key3 = root / f"{KILLED}.key"
    key3.write_bytes(signers[KILLED].private_bytes())
    gateway_toml = write_gateway_toml(root, broker, "siteclock_gateway-faults", keepalive_s=5)

    proxy = TcpProxy(broker.host, broker.port).start()
    gateway = start_gateway(root, gateway_toml)
    tappers: list[Tapper] = []
    threads: list[threading.Thread] = []
    t3_cfg = terminal_config(broker, KILLED, port=proxy.port, resend_after_s=1.5)
    t3 = start_terminal_process(root, t3_cfg, key3, taps=10_000)
    try:
        for tid in IN_PROCESS:
            cfg = terminal_config(broker, tid, port=proxy.port, resend_after_s=1.5)
            tapper = make_tapper(root, tid, signers[tid], cfg, reconnect_max_s=1)
            tapper.uplink.start()
            tappers.append(tapper)
            threads.append(threading.Thread(target=tapper.run, daemon=True))
        for thread in threads:
            thread.start()

        time.sleep(2.0)
        broker.kill()  # 1. the broker crashes and loses every session and queued message
        time.sleep(1.5)
        broker.start()
        time.sleep(2.0)
        sigkill(gateway)  # 2. the gateway crashes mid-stream
        time.sleep(1.5)
        gateway = start_gateway(root, gateway_toml)
        time.sleep(2.0)
        sigkill(t3)  # 3. a terminal process dies; its outbox file is all that is left
        time.sleep(1.0)
        t3 = start_terminal_process(root, t3_cfg, key3, taps=40)
        time.sleep(1.0)
        proxy.cut()  # 4. the site's network goes down; terminals keep tapping offline
        time.sleep(2.5)
        proxy.restore()
        time.sleep(1.5)

        for tapper in tappers:
            tapper.stop.set()
        for thread in threads:
            thread.join(5)
        boxes = [t.box for t in tappers]
        assert wait_until(lambda: all(b.stats().depth == 0 for b in boxes), 45), [
            (b.stats(), t.uplink.counters) for b, t in zip(boxes, tappers, strict=True)
        ]
        assert t3.wait(45) == 0, (root / f"{KILLED}.log").read_text()[-3000:]
    finally:
        for tapper in tappers:
            tapper.stop.set()
            tapper.uplink.stop()
        if t3.poll() is None:
            sigkill(t3)
        sigkill(gateway)
        proxy.close()

    committed = saved_histories(tappers)
    box3 = Outbox(root / f"{KILLED}.db", signer=signers[KILLED], terminal_id=KILLED,
                  workplace=WORKPLACE)  # fmt: skip
    committed[KILLED] = [(s.event.seq, s.event.event_id) for s in box3.events()]
    assert box3.stats().depth == 0
    box3.close()

    inbox = Inbox(db)
    verdicts = classify(committed, inbox)
    total = sum(len(v) for v in committed.values())
    assert total > 200  # the test really tapped through the faults
    assert verdicts == Counter(stored=total), verdicts
    assert inbox.gaps() == []
    assert inbox.alerts() == []
    inbox.close()
