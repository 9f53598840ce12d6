"""A jump in a terminal's sequence is loud for a gateway alone (it sees every message) and
quiet for one of several in a share group (another gateway holds the missing ones, mostly);
either way the alert comes only if the inbox still lacks them after the grace period."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from siteclock.gateway.intake_gaps import GapWatch
from siteclock.gateway.store import Inbox

NOTE = "gap in a terminal's sequence"


@pytest.mark.parametrize(("shared", "level"), [(False, logging.WARNING), (True, logging.DEBUG)])
def test_a_jump_is_noted_at_the_level_of_the_setup_and_alerted_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shared: bool, level: int
) -> None:
    now = [0.0]
    stats: Counter[str] = Counter()
    watch = GapWatch(Inbox(tmp_path / "gateway.db"), stats, clock=lambda: now[0],
                     grace_s=10.0, shared=shared)  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="siteclock.gateway.intake_gaps")
    watch.learn(["t-a"])
    watch.note("t-a", [1, 4])  # 2..3 not seen by this gateway

    [note] = [r for r in caplog.records if r.getMessage() == NOTE]
    assert note.levelno == level
    assert stats["gaps_detected"] == 1
    now[0] = 11.0
    watch.check()  # nobody stored 2..3 (this test stores nothing): the alert is due either way
    assert stats["gaps_alerted"] == 1
