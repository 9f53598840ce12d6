"""SIGKILL a real ``siteclock terminal`` process at random moments during bursts of taps.

After every kill the outbox is opened again and checked against what the worker was told:

* every tap answered with a seq in the feedback journal (``saved``, ``unknown_badge``,
  ``blocked``) is in the outbox at that seq, with that badge: feedback never runs ahead of COMMIT;
* sequence numbers never repeat or go back: an event seen at seq N after one kill is the very
  same event (same digest) after every later kill, and new events only extend the chain;
* ``protocol.verify_chain`` passes over the whole outbox.

The kill lands anywhere: during start-up, inside a transaction, between COMMIT and feedback.
Randomness is seeded and the seed printed, so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("siteclock.hw.sim", reason="the simulated reader (hw/sim.py) is missing")

from siteclock.protocol import verify_chain
from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox
from tests.support.terminal_files import answered, tap_burst, write_terminal_config

pytestmark = pytest.mark.slow

ROUNDS = 50
BURST = 12
RECORDED = {"saved", "unknown_badge", "blocked"}


def start(cfg: Path, sock: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    env.pop("NOTIFY_SOCKET", None)
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "siteclock.cli", "terminal", "--config", str(cfg),
             "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while not sock.exists():
        if proc.poll() is not None:
            raise AssertionError(f"terminal exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"terminal did not open its reader:\n{log.read_text()}")
        time.sleep(0.01)
    return proc


def test_sigkill_never_loses_a_saved_tap_nor_reissues_a_seq(tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_SEED", random.randrange(2**32)))
    print(f"KILL_SEED={seed}")
    rng = random.Random(seed)
    sock, journal = tmp_path / "t.sock", tmp_path / "journal.jsonl"
    cfg = write_terminal_config(tmp_path, terminal_id="t-kill", socket=sock, repeat_window_s=0.0)
    log = tmp_path / "terminal.log"
    seen: dict[int, bytes] = {}  # seq -> digest, across every restart
    landed = {"before any commit": 0, "between commit and answer": 0, "after answers": 0}
    answered_seqs: set[int] = set()

    for rnd in range(ROUNDS):
        if sock.exists():
            sock.unlink()  # left by the killed process; the next one must make its own
        proc = start(cfg, sock, log)
        badges = [f"sim:{rnd:02X}{i:02X}" for i in range(BURST)]
        sender = threading.Thread(target=tap_burst, args=(sock, badges))
        sender.start()
        time.sleep(rng.uniform(0.0, 0.12))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sender.join()
        held_before = len(seen)

        signer = identity.load(tmp_path / "data" / "terminal.key")
        box = Outbox(tmp_path / "data" / "outbox.db", signer=signer, terminal_id="t-kill",
                     workplace="ABCDEFGH12345")  # fmt: skip
        try:
            held = list(box.events())
            by_seq = {e.event.seq: e for e in held}
            assert sorted(by_seq) == list(range(1, len(held) + 1)), "held seqs are not 1..N"
            for seq, digest in seen.items():
                assert by_seq[seq].digest == digest, f"round {rnd}: seq {seq} changed or vanished"
            for e in held:
                seen[e.event.seq] = e.digest
            for line in answered(journal):
                if line["pattern"] in RECORDED:
                    event = by_seq.get(line["seq"])
                    assert event is not None, f"round {rnd}: answered seq {line['seq']} is lost"
                    assert event.event.badge == line["badge"]
            answered_seqs |= {x["seq"] for x in answered(journal) if x["pattern"] in RECORDED}
            if len(held) == held_before:
                landed["before any commit"] += 1
            elif held[-1].event.seq not in answered_seqs:
                landed["between commit and answer"] += 1
            else:
                landed["after answers"] += 1
            keys = {signer.kid: signer.public_key_bytes()}
            assert verify_chain(held, keys) == len(held)
            assert box.stats().last_seq == len(held)
        finally:
            box.close()

    saved = [x for x in answered(journal) if x["pattern"] in RECORDED]
    assert len(saved) >= ROUNDS, "too few taps were answered for the test to mean anything"
    assert len({x["seq"] for x in saved}) == len(saved), "one seq was answered twice"
    print(f"{len(saved)} taps answered, {len(seen)} events held; kills landed: {landed}")
