"""Power cuts under a real ``siteclock terminal``: does every saved tap survive?

The terminal's data directory lives on the power-loss FUSE filesystem of the tests
(``tests/support/powerfs.py``): file data is durable only after its fsync, names only after
their directory's fsync, and a cut drops what was not synced, tears the last write at a sector,
or writes unsynced pages back at random. Each of the 210+ rounds taps a burst of badges (a
third of them with a second process acknowledging and pruning events, one in seven from a
first start with no data directory) and cuts the power at a random moment, then checks the
outbox as it survived against the feedback the workers saw (``tests/support/power_cuts.py``).

Figures: ``cuts``, ``saved`` (taps answered "saved" in total), ``saved_lost``, ``seq_reused``,
``chain_broken`` (``verify-chain`` with the surviving public key file did not say OK; of which
``key_damaged``), ``restart_failed``, ``pruned``. Goal: the first three are 0.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from tests.support.power_cuts import TerminalUnderCuts
from tests.support.powerfs import MODES, fuse_available

ROUNDS = 210


def run() -> dict:
    if not fuse_available():
        raise RuntimeError("needs /dev/fuse, fusermount3 (Debian fuse3) and mfusepy (make venv)")
    seed = random.randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="bench-power-cut-") as tmp, \
            TerminalUnderCuts(Path(tmp), seed=seed) as terminal:  # fmt: skip
        tally = terminal.run(ROUNDS, first_start_every=7, acks_every=3)
    figures = tally.figures()
    problems = figures.pop("problems")
    return {
        **figures,
        "seed": seed,
        "modes": list(MODES),
        "problems": problems,
        "goal": "saved_lost == seq_reused == chain_broken == 0 over >= 200 cuts",
        "goal_met": tally.cuts >= 200
        and tally.saved_lost == tally.seq_reused == tally.chain_broken == 0,
    }
