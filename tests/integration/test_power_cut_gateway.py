"""Power cuts under the gateway: its database on the power-loss filesystem
(tests/support/powerfs.py) while events are stored (as the intake stores them) and relayed to
the CIaO simulator by a relay process.

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
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay
from tests.support.ciao import (
    exactly_once_report,
    make_world,
    rsa_pair,
    running_sim,
    write_private_key,
)
from tests.support.powerfs import MODES, PowerFS, fuse_available
from tests.support.relay_proc import ROOT, spawn_relay

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]

CUTS = 12
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
