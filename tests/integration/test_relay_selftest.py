"""An installer's self-test tap is stored and acknowledged, but never registered with the NSSO."""

from __future__ import annotations

import time
from pathlib import Path

from siteclock import protocol as p
from siteclock.gateway.ciao.sim import SimServer
from tests.support.ciao import CLIENT_ID, WORKPLACE, make_world, rsa_pair
from tests.support.inbox import TerminalFeed, insert


def test_selftest_tap_is_kept_but_never_sent(tmp_path: Path) -> None:
    with SimServer(validation_delay_s=0.05) as sim:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        world = make_world(tmp_path, sim, workers=1)
        feed = TerminalFeed("term-self-01", WORKPLACE)
        badge = world.people[0].badge
        selftest = feed.event(p.Kind.IN, badge, time.time_ns(), flags=(p.Flag.SELFTEST,))
        real = feed.event(p.Kind.IN, badge, time.time_ns())
        insert(world.db, [selftest, real])

        world.run_until_state("term-self-01", 2, "registered")

        assert world.relay.store.get("term-self-01", 1)["state"] == "selftest"
        assert world.relay.store.get("term-self-01", 2)["state"] == "registered"
        assert len(sim.registrations()) == 1
        assert [v.seq for _, v in world.verdicts] == [2]
