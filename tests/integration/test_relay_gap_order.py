"""A terminal's earlier event reaching the gateway after its later ones (a gateway restart: the
event in flight at the kill comes back only with the terminal's resend). The relay must decide
the worker's sequence with it, not without it: found by the soak, where seq 1 (an ``in``)
arrived after seqs 2-9 and every tap of that worker after it was sent the wrong way round.

The real relay against the CIaO simulator over HTTP; the events are signed, chained terminal
events stored in the gateway's SQLite inbox the way the intake stores them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.sequence import issues_of
from siteclock.protocol import Kind
from tests.support.ciao import WORKPLACE, make_world, running_sim
from tests.support.inbox import TerminalFeed, insert

MINUTE = 60 * 10**9
DAY = [Kind.IN, Kind.BREAK_START, Kind.BREAK_END, Kind.OUT, Kind.IN, Kind.OUT, Kind.IN,
       Kind.OUT, Kind.IN]  # fmt: skip
SENT = ["in", "out", "in", "out", "in", "out", "in", "out", "in"]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.0, seed=3) as server:
        yield server


def _turns(world, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        world.relay.run_once()
        time.sleep(0.02)


def _types_by_time(sim: SimServer) -> list[str]:
    return [r["type"] for r in sorted(sim.registrations(), key=lambda r: r["registrationDate"])]


def test_an_earlier_event_arriving_last_is_decided_first(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=1, gap_hold_s=30.0, gap_recheck_s=0.05)
    feed = TerminalFeed("term-gap-01", WORKPLACE)
    badge = world.people[0].badge
    start = time.time_ns() - 3 * 3600 * 10**9
    events = [feed.event(kind, badge, start + i * 10 * MINUTE) for i, kind in enumerate(DAY)]

    insert(world.db, events[1:])  # seqs 2-9: the terminal's later taps come first
    _turns(world, 1.0)
    assert sim.registrations() == []  # nothing decided without seq 1
    row = world.relay.store.get("term-gap-01", 5)
    assert row["state"] == "awaiting_earlier"
    assert "seq 1" in world.relay.store.get("term-gap-01", 2)["last_error"]

    insert(world.db, events[:1])  # the resend of seq 1
    world.run_until_final()

    assert _types_by_time(sim) == SENT
    assert issues_of(world.relay.store.db) == []
    assert world.relay.counters["gap_held"] >= 8
    assert world.relay.counters["gap_hold_expired"] == 0


def test_a_gap_that_never_fills_holds_only_for_the_grace_time(
    tmp_path: Path, sim: SimServer
) -> None:
    """A wiped outbox: seq 1 never comes. The rest goes after ``gap_hold_s`` as if it were the
    whole story, and the employer sees what the sequence made of it."""
    world = make_world(tmp_path, sim, workers=1, gap_hold_s=0.5, gap_recheck_s=0.05)
    feed = TerminalFeed("term-gap-02", WORKPLACE)
    badge = world.people[0].badge
    start = time.time_ns() - 3 * 3600 * 10**9
    events = [feed.event(kind, badge, start + i * 10 * MINUTE) for i, kind in enumerate(DAY)]

    insert(world.db, events[1:])
    world.run_until_final()

    assert world.relay.counters["gap_hold_expired"] >= 1
    # Without the lost `in`, the break start at seq 2 opens the day and is corrected to `in`;
    # the break end that follows then becomes the `out` the sequence expects.
    assert _types_by_time(sim)[:2] == ["in", "out"]
    assert {i["seq"] for i in issues_of(world.relay.store.db)} >= {2}


def test_events_of_other_terminals_are_not_held(tmp_path: Path, sim: SimServer) -> None:
    """A gap holds only its own terminal: the site's other terminals go on at once."""
    world = make_world(tmp_path, sim, workers=2, gap_hold_s=30.0, gap_recheck_s=0.05)
    gapped, lobby = TerminalFeed("term-gap-03", WORKPLACE), TerminalFeed("term-ok-03", WORKPLACE)
    now = time.time_ns() - 3600 * 10**9
    held = [gapped.event(Kind.IN, world.people[0].badge, now),
            gapped.event(Kind.OUT, world.people[0].badge, now + MINUTE)]  # fmt: skip
    fine = [lobby.event(Kind.IN, world.people[1].badge, now),
            lobby.event(Kind.OUT, world.people[1].badge, now + MINUTE)]  # fmt: skip
    insert(world.db, [held[1], *fine])
    _turns(world, 1.0)
    states = {k: world.relay.store.get(*k)["state"] for k in
              [("term-gap-03", 2), ("term-ok-03", 1), ("term-ok-03", 2)]}  # fmt: skip
    assert states[("term-gap-03", 2)] == "awaiting_earlier"
    assert states[("term-ok-03", 1)] == states[("term-ok-03", 2)] == "registered"
    insert(world.db, held[:1])
    world.run_until_final()
    assert sorted(r["type"] for r in sim.registrations()) == ["in", "in", "out", "out"]
