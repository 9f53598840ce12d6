"""The gateway's relay and the CIaO simulator in network namespaces of their own, over a link
that loses, delays, reorders and duplicates packets and goes down for a long while
(compressed): every stored event is registered with the simulator once, none twice.

Real HTTP between two kernel TCP stacks: the simulator listens only at the link's address
inside its namespace, and the relay's requests leave from the gateway's namespace. A link that
is down while a request is on its way is the ambiguous failure the relay must look up before it
submits again (no blind retry of a POST); the simulator's own record is the judge.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from tests.support.ciao import CLIENT_ID, WORKPLACE, exactly_once_report, make_world, rsa_pair
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.netns import Netns, impaired_link, unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

EVENTS = 120
SCHEDULE: list[tuple[str, dict[str, float], float]] = [
    ("loss 20 %, delay 80 +- 40 ms", {"loss": 0.2, "delay_s": 0.08, "jitter_s": 0.04}, 2.0),
    (
        "reorder 30 % behind 60 ms, duplicate 30 %",
        {"reorder": 0.3, "delay_s": 0.06, "duplicate": 0.3},
        2.0,
    ),
    ("down", {"down": 1.0}, 5.0),  # minutes, compressed: five times the client's read timeout
    (
        "everything at once",
        {"loss": 0.1, "delay_s": 0.05, "jitter_s": 0.05, "reorder": 0.2, "duplicate": 0.2},
        2.0,
    ),
]


def test_every_stored_event_registered_once_through_a_bad_link(tmp_path: Path) -> None:
    with Netns.pair("ciao") as (gateway, ciao), impaired_link(gateway, ciao) as link:
        with ciao.entered():
            sim = SimServer(host=link.right_ip, validation_delay_s=0.05, seed=14)
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        sim.start()
        try:
            world = make_world(tmp_path, sim, workers=6, read_s=1.0)
            feed = TerminalFeed("term-net-01", WORKPLACE)
            insert(world.db, make_events([feed], [x.badge for x in world.people], EVENTS))
            with gateway.entered():  # the relay's HTTP connections open from this thread
                for _name, faults, seconds in SCHEDULE:
                    if faults.get("down"):
                        link.down()
                    else:
                        link.impair(**faults)
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        world.relay.run_once()
                        time.sleep(0.01)
                link.up()
                world.run_until_final(timeout=60)
        finally:
            sim.stop()
    assert world.relay.store.counts() == {"registered": EVENTS}
    total, duplicates = exactly_once_report(sim.registrations())
    assert (total, duplicates) == (EVENTS, [])
    if link.counters is not None:  # the faults really happened on the wire
        assert link.counters.dropped > 0
        assert link.counters.duplicated > 0
