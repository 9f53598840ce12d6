"""A badge-enrolment tap is claimed before its badge is linked, so the relay never registers it,
even when the relay had already seen the tap as an unknown badge."""

from __future__ import annotations

import time
from pathlib import Path

from siteclock import protocol as p
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.relay_store import RelayStore
from siteclock.provisioning.gateway.badge_enrolment import link_next_tap
from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key
from tests.support.ciao import CLIENT_ID, WORKPLACE, make_world, rsa_pair
from tests.support.inbox import TerminalFeed, insert


def test_enrolment_tap_is_never_sent_but_later_taps_are(tmp_path: Path) -> None:
    with SimServer(validation_delay_s=0.05) as sim:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        world = make_world(tmp_path, sim, workers=1)
        workers = Workers(world.registry, load_or_create_ref_key(tmp_path / "ref.key"))
        feed = TerminalFeed("term-enrol-01", WORKPLACE)
        new_badge = "nfc-a:0A0B0C0D"
        started = time.time_ns()
        # the terminal flags a badge its roster does not know, as a real one does
        tap = feed.event(p.Kind.IN, new_badge, time.time_ns(), flags=(p.Flag.UNKNOWN_BADGE,))
        insert(world.db, [tap])
        world.relay.run_once()  # the relay sees an unknown badge first
        assert world.relay.store.get("term-enrol-01", 1)["state"] == "unknown_badge"

        badge = link_next_tap(
            world.db, workers, worker_ref=world.people[0].worker_ref,
            terminal_id="term-enrol-01", since_ns=started, timeout_s=5,
        )  # fmt: skip
        assert badge == new_badge
        # the worker's next tap is attendance, and the only one the NSSO hears of
        insert(world.db, [feed.event(p.Kind.IN, new_badge, time.time_ns())])
        world.run_until_state("term-enrol-01", 2, "registered")

        assert world.relay.store.get("term-enrol-01", 1)["state"] == "enrolment"
        assert world.relay.store.get("term-enrol-01", 2)["state"] == "registered"
        assert len(sim.registrations()) == 1
        assert [v.seq for _, v in world.verdicts] == [2]


def test_the_relay_sees_which_rows_are_still_queued(tmp_path: Path) -> None:
    store = RelayStore(tmp_path / "gateway.db")
    with store.tx() as db:
        for seq, state in ((1, "queued"), (2, "enrolment"), (3, "queued"), (4, "submitted")):
            db.claim_tap("t-a", seq, state, "", ("queued",), 0)
        keys = [("t-a", 1), ("t-a", 2), ("t-a", 3), ("t-a", 4), ("t-b", 1)]
        assert store.still_queued(db, keys) == {("t-a", 1), ("t-a", 3)}
        assert store.still_queued(db, []) == set()
    store.close()
