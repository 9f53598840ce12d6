"""Power cuts under the gateway: its database on the power-loss filesystem
(tests/support/powerfs.py) while events are stored (as the intake stores them) and relayed to
the CIaO simulator by a relay process; and under the real gateway process (MQTT intake) while
a terminal drains to it.

Each round starts a writer process (tests/support/intake_writer.py: the data layer's
``store_events``, then an "ack" line, as the intake acks "stored" only after COMMIT) and a relay
process, cuts the power at a random moment (unsynced writes dropped, torn or written back at
random) and mounts the disk again. After every cut each acknowledged event must be in the
inbox. At the end a relay drains everything; the simulator's own record must show each stored
event registered exactly once: a cut between the POST and the relay's record of it must lead
to a lookup, never to a second registration. The INSS key lives on the cut disk too (a key lost
to a cut would orphan every stored INSS).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Kind
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.integration.test_delivery_faults import (
    CLOCK,
    WORKPLACE,
    classify,
    sigkill,
    start_gateway,
)
from tests.support.ciao import (
    exactly_once_report,
    make_world,
    rsa_pair,
    running_sim,
    write_private_key,
)
from tests.support.mosquitto import running_broker, terminal_config, write_gateway_toml
from tests.support.powerfs import MODES, PowerFS, fuse_available
from tests.support.relay_proc import ROOT, spawn_relay
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]

CUTS = 12
GATEWAY_CUTS = 6
DAY_NS = 86_400 * 10**9


def _writer(db: Path, terminal: str, badges: list[str], offset: int) -> subprocess.Popen:
    args = {"db": str(db), "terminal": terminal, "badges": badges, "batch": 4,
            "start_ns": time.time_ns() - 2 * DAY_NS, "offset": offset}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.intake_writer", json.dumps(args)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _acked(output: bytes) -> set[tuple[str, int]]:
    acked = set()
    for line in output.decode().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the cut tore: no ack went out
        acked |= {(item["terminal"], seq) for seq in item["seqs"]}
    return acked


def _inbox(db: Path) -> set[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return set(conn.execute("SELECT terminal, seq FROM inbox").fetchall())
    finally:
        conn.close()


def test_gateway_power_cuts_lose_no_acked_event_and_register_none_twice(tmp_path: Path) -> None:
    seed = int(os.environ.get("POWER_CUT_SEED", random.randrange(2**32)))
    print(f"POWER_CUT_SEED={seed}")
    rng = random.Random(seed)
    key_file = write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])
    acked: set[tuple[str, int]] = set()
    with running_sim(validation_delay_s=0.05, seed=7) as sim, \
            PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:  # fmt: skip
        world = make_world(fs.mount, sim, workers=10, read_s=0.4, batch_limit=20)
        world.relay.store.close()
        world.registry.close()  # nothing of this process may hold the disk open across a cut
        badges = [p.badge for p in world.people]
        db = fs.mount / "gateway.db"
        for cut in range(CUTS):
            writer = _writer(db, f"term-cut{cut:02d}", badges, offset=cut * 2000)
            relay = spawn_relay(fs.mount, sim.url, key_file, read_s=0.4, batch_limit=20)
            time.sleep(rng.uniform(0.2, 0.8))
            for proc in (writer, relay):  # the power goes under both at once
                proc.send_signal(signal.SIGKILL)
            output, _ = writer.communicate()
            relay.communicate()
            acked |= _acked(output)
            fs.cut(MODES[cut % len(MODES)], seed=rng.randrange(2**32))
            fs.start()
            lost = acked - _inbox(db)
            assert not lost, f"cut {cut}: acknowledged events lost: {sorted(lost)[:5]}"

        registry = Registry(db, fs.mount / "inss.key")
        relay = Relay(db, world.relay.client, registry, config=world.relay.config,
                      on_verdict=lambda t, v: None)  # fmt: skip
        world.relay, world.registry = relay, registry
        try:
            world.run_until_final(timeout=60)
            stored = _inbox(db)
            counts = relay.store.counts()
        finally:
            relay.store.close()
            registry.close()
    records = sim.registrations()
    total, duplicates = exactly_once_report(records)
    print(f"{len(acked)} acked, {len(stored)} stored, {total} registered; {counts}")
    assert duplicates == []
    assert total == len(stored)
    assert acked <= stored
    assert len(acked) >= CUTS * 4, "too few events were acknowledged to mean anything"


def test_intake_power_cuts_lose_no_event_it_acknowledged(tmp_path: Path) -> None:
    """The real gateway process (``siteclock gateway``: MQTT intake, PUBACK and "stored" ack
    only after COMMIT) with its database and keys on the power-loss filesystem, a terminal
    (outbox + uplink, on a disk that does not lose power) tapping throughout. After every cut,
    each event the terminal holds as delivered (the gateway acked it) is in the inbox; at the
    end every event is stored exactly once."""
    seed = int(os.environ.get("POWER_CUT_SEED", random.randrange(2**32)))
    print(f"POWER_CUT_SEED={seed}")
    rng = random.Random(seed)
    tid = "t-gcut"
    with running_broker(tmp_path / "broker", terminals=[tid]) as broker, \
            PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:  # fmt: skip
        db = fs.mount / "gateway.db"
        signer = Ed25519Signer.generate()
        registry = TerminalRegistry(db)
        registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
        registry.close()
        config = Path(shutil.move(write_gateway_toml(fs.mount, broker, "siteclock_gateway-cut"),
                                  tmp_path / "gateway.toml"))  # fmt: skip
        box = Outbox(tmp_path / "outbox.db", signer=signer, terminal_id=tid, workplace=WORKPLACE)
        uplink = Uplink(terminal_config(broker, tid, resend_after_s=1.0), terminal_id=tid,
                        outbox=box, status=dict, on_roster=lambda r: None,
                        reconnect_max_s=0.5)  # fmt: skip
        stop = threading.Event()

        def tapping() -> None:
            while not stop.is_set():
                box.append(kind=Kind.IN, badge="nfc-a:0A", clock=CLOCK)
                uplink.wake()
                time.sleep(0.02)

        tapper = threading.Thread(target=tapping, daemon=True)
        gateway = start_gateway(tmp_path, config)
        uplink.start()
        tapper.start()
        try:
            for cut in range(GATEWAY_CUTS):
                time.sleep(rng.uniform(0.5, 2.0))
                sigkill(gateway)  # the gateway's power goes; the terminal keeps tapping
                fs.cut(MODES[cut % len(MODES)], seed=rng.randrange(2**32))
                fs.start()
                delivered = _delivered(tmp_path / "outbox.db")
                stored = {seq for _tid, seq in _inbox(db)}
                lost = delivered - stored
                assert not lost, f"cut {cut}: acknowledged events lost: {sorted(lost)[:5]}"
                gateway = start_gateway(tmp_path, config)
            stop.set()
            tapper.join(5)
            assert wait_until(lambda: box.stats().depth == 0, 60), (box.stats(), uplink.counters)
        finally:
            stop.set()
            uplink.stop()
            sigkill(gateway)
        held = [(s.event.seq, s.event.event_id) for s in box.events()]
        box.close()
        inbox = Inbox(db)
        try:
            verdicts = classify({tid: held}, inbox)
        finally:
            inbox.close()
    assert len(held) > 50, "too few taps for the test to mean anything"
    assert verdicts == Counter(stored=len(held)), verdicts


def _delivered(outbox: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return {seq for (seq,) in conn.execute("SELECT seq FROM events WHERE state='delivered'")}
    finally:
        conn.close()
