"""Power cuts under a real ``siteclock terminal`` whose data directory is on the power-loss
filesystem (tests/support/powerfs.py): what a worker was told was saved survives every cut.

Each round taps a burst, sometimes with a second process acknowledging and pruning events, and
cuts the power at a random moment (unsynced writes dropped, torn, or written back at random),
then checks the outbox as it survived (tests/support/power_cuts.py): no answered tap lost, no
sequence number holding another event, and ``siteclock verify-chain`` with the public key file
as it survived says OK. Some rounds start from no data directory at all, so cuts land while the
terminal makes its key, its public key file and its outbox (the public key once came back as an
empty file, and verify-chain then called a good history BROKEN).

The benchmark ``power_cut`` runs 200+ such cuts; this test runs a few dozen. Randomness is
seeded and the seed printed (POWER_CUT_SEED=... replays it).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.support.power_cuts import TerminalUnderCuts
from tests.support.powerfs import fuse_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]

ROUNDS = 30


def test_power_cuts_lose_no_saved_tap_reuse_no_seq_and_keep_the_chain_verifiable(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("POWER_CUT_SEED", random.randrange(2**32)))
    print(f"POWER_CUT_SEED={seed}")
    with TerminalUnderCuts(tmp_path, seed=seed) as terminal:
        tally = terminal.run(ROUNDS, first_start_every=6, acks_every=3)
    print(tally.figures())
    assert tally.problems == []
    assert (tally.saved_lost, tally.seq_reused, tally.chain_broken) == (0, 0, 0)
    assert tally.restart_failed == 0
    assert tally.cuts == ROUNDS
    assert tally.saved >= ROUNDS, "too few taps were answered for the test to mean anything"
    assert tally.pruned > 0, "no cut landed after acks and pruning"
