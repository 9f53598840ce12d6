"""Two gateways' relays on one PostgreSQL database: a relay that starts leaves alone the rows
another, live relay has in flight, and recovers them once that relay is SIGKILLed (its
instance lease freed by the server), so the CIaO simulator's record shows each registration
exactly once, the ones the dead relay's POST created found by search, never sent again.

Relay A is a process of its own (killed mid-POST: CIaO committed its batch, then hangs);
relay B runs in this process, turned by hand.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from siteclock.gateway.relay import Relay, RelayConfig
from tests.support.ciao import (
    FAST_RELAY,
    WORKPLACE,
    client_for,
    exactly_once_report,
    make_world,
    rsa_pair,
    running_sim,
    write_private_key,
)
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.postgres import PostgresCluster
from tests.support.relay_proc import spawn_relay
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

EVENTS = 20
HANG_S = 4.0
"""CIaO commits relay A's batch, then answers only after this: the time A's rows are in flight."""


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=13) as server:
        yield server


def test_a_live_relays_rows_are_left_alone_and_a_dead_ones_recovered_once(
    tmp_path: Path, sim: SimServer, postgres: PostgresCluster
) -> None:
    url = postgres.fresh_url()
    world = make_world(tmp_path, sim, workers=6, db=url)
    world.relay.stop()  # type: ignore[attr-defined]  # A and B below are the two gateways
    feeds = [TerminalFeed(f"t-pg-{i:02d}", WORKPLACE) for i in range(2)]
    insert(url, make_events(feeds, [p.badge for p in world.people], EVENTS))
    key_file = write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])
    watch = PostgresGatewayDB(url)
    sim.set_faults(commit_then_hang_rate=1.0, hang_s=HANG_S)
    relay_a = spawn_relay(
        tmp_path, sim.url, key_file, read_s=HANG_S * 3, batch_limit=EVENTS * 2, db=url
    )
    relay_b: Relay | None = None
    try:
        in_flight = lambda: watch.registration_counts() == {"submitted": EVENTS}  # noqa: E731
        assert wait_until(in_flight, timeout=HANG_S), watch.registration_counts()
        (a_id,) = watch.submitters()
        assert a_id is not None

        # B starts while A's POST is on its way: A's rows stay A's, at start and each turn.
        relay_b = Relay(
            url, client_for(sim.url), world.registry, config=RelayConfig(**FAST_RELAY),  # type: ignore[arg-type]
            on_verdict=lambda terminal, verdict: world.verdicts.append((terminal, verdict)),
        )  # fmt: skip
        relay_b.instance.check_s = 0.0  # look for gone relays every turn
        for _ in range(5):
            relay_b.run_once()
        assert watch.registration_counts() == {"submitted": EVENTS}
        assert watch.submitters() == {a_id}
        assert relay_b.counters["recovered_submitted"] == 0
        assert relay_b.instance.id != a_id

        os.kill(relay_a.pid, signal.SIGKILL)  # A dies mid-POST; CIaO has its batch
        relay_a.wait(10)
        sim.set_faults(commit_then_hang_rate=0.0)
        b = relay_b

        def recovered() -> bool:
            b.run_once()
            return b.counters["recovered_submitted"] == EVENTS

        assert wait_until(recovered, timeout=10, interval=0.05), watch.registration_counts()
        world.relay = relay_b
        world.run_until_final(timeout=30)
        assert watch.registration_counts() == {"registered": EVENTS}
    finally:
        if relay_a.poll() is None:
            relay_a.kill()
            relay_a.wait(10)
        if relay_b is not None:
            relay_b.stop()
        watch.close()
        world.registry.close()

    total, duplicated = exactly_once_report(sim.registrations())
    assert (total, duplicated) == (EVENTS, [])
    assert relay_b.counters["created"] == 0  # every one found by search, none sent again
    assert len({(t, v.seq) for t, v in world.verdicts}) == EVENTS  # type: ignore[attr-defined]
