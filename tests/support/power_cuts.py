"""Test helper: cut the power under a real ``siteclock terminal`` whose data lives on
:mod:`tests.support.powerfs`, and check what survived against what the workers were told.

One round: start the terminal process (as ``tests/integration/test_kill.py`` does), send a burst
of taps, optionally run a second process that acknowledges and prunes events (the outbox calls
the uplink makes on the gateway's acks), then at a random moment kill every process, cut the
power (``drop``, ``torn`` or ``random`` writeback) and mount the filesystem again. The checks,
counted in :class:`Tally` rather than asserted so the ``power_cut`` benchmark can report them:

* ``saved_lost``: a tap the worker was told was recorded (``saved``, ``unknown_badge``,
  ``blocked`` in the feedback journal, which lives off the cut disk like the worker's memory)
  that is not in the outbox at its seq with its badge, and was not pruned after delivery;
  an event held after one cut that is gone after a later one counts too;
* ``seq_reused``: a seq that holds a different event than it held after an earlier cut;
* ``chain_broken``: ``siteclock verify-chain`` with the public key file as it survived does
  not say OK (``key_damaged`` counts the times it said the key file was damaged);
* ``restart_failed``: the terminal did not come back after a cut.

A "first start" round begins with a data directory that does not exist yet, so the cut lands
while the terminal creates its key, public key and outbox.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path

from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox, verify_cli
from tests.support.powerfs import MODES, PowerFS
from tests.support.terminal_files import WORKPLACE, answered, tap_burst, write_terminal_config

RECORDED = {"saved", "unknown_badge", "blocked"}

# The second process of a round with acks: what the uplink does when the gateway acks, in a
# tight loop, so cuts land inside mark_delivered, prune_delivered and the incremental vacuum.
ACKER = """
import sys, time
from pathlib import Path
from siteclock.terminal import identity
from siteclock.terminal.outbox import Outbox
data, tid, wp = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
while True:
    try:
        box = Outbox(data / "outbox.db", signer=identity.load(data / "terminal.key"),
                     terminal_id=tid, workplace=wp)
        break
    except Exception:
        time.sleep(0.01)
while True:
    seqs = [e.event.seq for e in box.unsent(limit=4)]
    box.mark_delivered(seqs)
    box.prune_delivered(older_than_ns=time.time_ns(), batch=3)
    time.sleep(0.005)
"""


@dataclass
class Tally:
    cuts: int = 0
    saved: int = 0
    saved_lost: int = 0
    seq_reused: int = 0
    chain_broken: int = 0
    key_damaged: int = 0
    restart_failed: int = 0
    pruned: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict:
        out = asdict(self)
        out["problems"] = self.problems[:10]
        return out


class TerminalUnderCuts:
    """One terminal whose ``data_dir`` is on a power-loss filesystem, cut again and again."""

    def __init__(self, root: Path, *, seed: int) -> None:
        self.root = Path(root)
        self.rng = random.Random(seed)
        self.fs = PowerFS(self.root / "mnt", self.root / "disk.img")
        self.sock = self.root / "t.sock"
        self.log = self.root / "terminal.log"
        self.tally = Tally()
        self.generation = 0
        self.rounds = 0
        self._fresh()

    # ----------------------------------------------------------------- set-up
    def _fresh(self) -> None:
        """A new data directory (not created yet) and a new terminal: a first start."""
        self.generation += 1
        self.terminal_id = f"t-cut{self.generation}"
        self.data = self.fs.mount / f"data{self.generation}"
        gen_root = self.root / f"gen{self.generation}"
        gen_root.mkdir(parents=True, exist_ok=True)
        self.journal = gen_root / "journal.jsonl"
        self.config = write_terminal_config(
            gen_root, terminal_id=self.terminal_id, socket=self.sock, repeat_window_s=0.0,
            data_dir=self.data,
        )  # fmt: skip
        self.seen: dict[int, bytes] = {}
        self.pruned_seq = 0
        self.saved_before, self.pruned_before = self.tally.saved, self.tally.pruned

    def __enter__(self) -> TerminalUnderCuts:
        self.fs.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fs.stop()

    # ----------------------------------------------------------------- one round
    def start_terminal(self) -> subprocess.Popen:
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        env.pop("NOTIFY_SOCKET", None)
        if self.sock.exists():
            self.sock.unlink()
        with self.log.open("ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "siteclock.cli", "terminal", "--config", str(self.config),
                 "--log-level", "WARNING"],
                env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def round(self, *, mode: str, burst: int = 12, first_start: bool = False,
              acks: bool = False, window_s: float = 0.3) -> None:  # fmt: skip
        """One burst cut short by a power cut in ``mode``, then the checks."""
        self.rounds += 1
        if first_start:
            self._fresh()
        procs: list[subprocess.Popen] = []
        proc = self.start_terminal()
        procs.append(proc)
        sender: threading.Thread | None = None
        if first_start:
            time.sleep(self.rng.uniform(0.0, 1.2))  # lands anywhere in start-up (about 1 s)
        elif not self.wait_ready(proc):
            self.tally.restart_failed += 1
            self.tally.problems.append(f"round {self.rounds}: terminal did not start: "
                                       f"{self.log.read_text()[-400:]}")  # fmt: skip
        if acks:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", ACKER, str(self.data), self.terminal_id, WORKPLACE],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        if self.sock.exists():
            badges = [f"sim:{self.rounds % 256:02X}{i:02X}" for i in range(burst)]
            sender = threading.Thread(target=tap_burst, args=(self.sock, badges), daemon=True)
            sender.start()
            time.sleep(self.rng.uniform(0.0, window_s))
        for p in procs:  # the power goes for every process at once
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        if sender is not None:
            sender.join(timeout=10)
        self.fs.cut(mode, seed=self.rng.randrange(2**32))
        self.tally.cuts += 1
        self.fs.start()
        self.check()

    def run(self, rounds: int, *, first_start_every: int, acks_every: int) -> Tally:
        """``rounds`` rounds cycling through the cut modes; every ``first_start_every``-th
        from no data directory, every ``acks_every``-th (offset by one) with acks and pruning."""
        for rnd in range(rounds):
            self.round(
                mode=MODES[rnd % len(MODES)],
                first_start=rnd % first_start_every == 0,
                acks=rnd % acks_every == 1,
            )
        return self.tally

    # ----------------------------------------------------------------- checks
    def check(self) -> None:
        """Compare the outbox as it survived with what was seen and told before."""
        key = self.data / "terminal.key"
        outbox = self.data / "outbox.db"
        told = [x for x in answered(self.journal) if x["pattern"] in RECORDED]
        if not outbox.exists() or not key.exists():
            if told or self.seen:
                self.tally.saved_lost += len(told)
                self.tally.problems.append(
                    f"round {self.rounds}: {outbox.name if not outbox.exists() else key.name} "
                    f"is gone after {len(told)} taps were answered"
                )
            return
        box = Outbox(outbox, signer=identity.load(key), terminal_id=self.terminal_id,
                     workplace=WORKPLACE)  # fmt: skip
        try:
            first, _prev = box.checkpoint()
            held = {e.event.seq: e for e in box.events(from_seq=first)}
        finally:
            box.close()
        self.pruned_seq = max(self.pruned_seq, first - 1)
        for seq, digest in self.seen.items():
            if seq < first:
                continue
            event = held.get(seq)
            if event is None:
                self.tally.saved_lost += 1
                self.tally.problems.append(f"round {self.rounds}: held seq {seq} vanished")
            elif event.digest != digest:
                self.tally.seq_reused += 1
                self.tally.problems.append(f"round {self.rounds}: seq {seq} holds another event")
        for seq, event in held.items():
            self.seen.setdefault(seq, event.digest)
        for line in told:
            event = held.get(line["seq"])
            if line["seq"] < first:
                continue  # delivered and pruned: fine
            if event is None or event.event.badge != line["badge"]:
                self.tally.saved_lost += 1
                self.tally.problems.append(
                    f"round {self.rounds}: answered tap seq {line['seq']} is not held")
        self.tally.saved = self.saved_before + len(told)
        self.tally.pruned = self.pruned_before + self.pruned_seq
        if held:
            self._verify(outbox)

    def _verify(self, outbox: Path) -> None:
        out, err = StringIO(), StringIO()
        pub = identity.public_path(self.data / "terminal.key")
        with redirect_stdout(out), redirect_stderr(err):
            code = verify_cli(["--db", str(outbox), "--public-key", str(pub)])
        if code != 0:
            self.tally.chain_broken += 1
            self.tally.key_damaged += code == 3
            said = (out.getvalue() + err.getvalue()).strip()[:200]
            self.tally.problems.append(f"round {self.rounds}: verify-chain said {said}")


__all__ = ["Tally", "TerminalUnderCuts"]
