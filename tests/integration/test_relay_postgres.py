"""The relay on PostgreSQL against the CIaO simulator: one relay, then two relays of two
gateways sharing one queue. Their claims (``FOR UPDATE SKIP LOCKED``) never overlap, so the
simulator's own record shows every event registered exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.relay import Relay, RelayConfig
from tests.support.ciao import (
    FAST_RELAY,
    WORKPLACE,
    client_for,
    exactly_once_report,
    make_world,
    running_sim,
)
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.postgres import PostgresCluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=11) as server:
        yield server


def test_one_relay_on_postgresql_registers_every_event_once(
    tmp_path: Path, sim: SimServer, postgres: PostgresCluster
) -> None:
    world = make_world(tmp_path, sim, workers=6, db=postgres.fresh_url())
    feeds = [TerminalFeed(f"t-pg-{i:02d}", WORKPLACE) for i in range(3)]
    insert(world.db, make_events(feeds, [p.badge for p in world.people], 60))

    try:
        world.run_until_final(timeout=60)
        assert world.relay.store.counts() == {"registered": 60}  # type: ignore[attr-defined]
    finally:
        world.relay.stop()  # type: ignore[attr-defined]
        world.registry.close()

    total, duplicated = exactly_once_report(sim.registrations())
    assert (total, duplicated) == (60, [])
    assert len({(t, v.seq) for t, v in world.verdicts}) == 60  # type: ignore[attr-defined]


def test_two_relays_share_the_queue_without_double_submission(
    tmp_path: Path, sim: SimServer, postgres: PostgresCluster
) -> None:
    world = make_world(tmp_path, sim, workers=10, db=postgres.fresh_url(), batch_limit=10)
    feeds = [TerminalFeed(f"t-pg-{i:02d}", WORKPLACE) for i in range(5)]
    insert(world.db, make_events(feeds, [p.badge for p in world.people], 400))
    config = RelayConfig(**{**FAST_RELAY, "batch_limit": 10})  # type: ignore[arg-type]
    # Both built before either starts (a relay that starts leaves a live one's submitted rows
    # alone: tests/integration/test_relay_instances_postgres.py).
    second = Relay(
        world.db, client_for(sim.url), world.registry, config=config,
        on_verdict=lambda terminal, verdict: None,
    )  # fmt: skip
    relays = [world.relay, second]
    for relay in relays:
        relay.start()  # type: ignore[attr-defined]
    try:
        counts = world.relay.store.counts  # type: ignore[attr-defined]
        assert wait_until(lambda: counts() == {"registered": 400}, timeout=120), counts()
    finally:
        for relay in relays:
            relay.stop()  # type: ignore[attr-defined]
        world.registry.close()
    total, duplicated = exactly_once_report(sim.registrations())
    assert (total, duplicated) == (400, [])
    created = [relay.counters["created"] for relay in relays]  # type: ignore[attr-defined]
    assert sum(created) == 400
    assert min(created) > 0, created  # both did part of the work: neither waited on the other
