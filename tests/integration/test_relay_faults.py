"""The relay against the simulator: mapping, unresolved badges, alerts, and the fault test.

The fault test relays thousands of events while the simulator injects latency, 5xx bursts,
429 storms, token expiry, dropped connections and timeouts after commit, and while the relay
process is SIGKILLed mid-request and restarted. The simulator's own record must then show every
event registered exactly once, and no request that came back before its Retry-After.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.relay import registration_date
from siteclock.protocol import Kind, Outcome
from tests.support.ciao import (
    CLIENT_ID,
    WORKPLACE,
    exactly_once_report,
    make_world,
    rsa_pair,
    running_sim,
    write_private_key,
)
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.relay_proc import spawn_relay
from tests.support.waiting import wait_for, wait_until


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=7) as server:
        yield server


# --------------------------------------------------------------------------- behaviour


def test_kinds_map_to_in_out_and_wall_time_to_registration_date(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=1)
    feed = TerminalFeed("term-map-01", WORKPLACE)
    badge = world.people[0].badge
    wall = 1_736_926_200_123_456_789  # 2025-01-15T07:30:00.123456789Z
    kinds = [Kind.IN, Kind.BREAK_START, Kind.BREAK_END, Kind.OUT]
    insert(world.db, [feed.event(k, badge, wall + i * 60 * 10**9) for i, k in enumerate(kinds)])

    world.run_until_final()

    records = sim.registrations()
    assert [r["type"] for r in records] == ["in", "out", "in", "out"]
    assert [r["registrationDate"] for r in records] == [
        "2025-01-15T07:30:00Z",
        "2025-01-15T07:31:00Z",
        "2025-01-15T07:32:00Z",
        "2025-01-15T07:33:00Z",
    ]
    assert registration_date(wall, "milliseconds") == "2025-01-15T07:30:00.123Z"
    assert records[0]["ssin"] == world.people[0].inss
    assert records[0]["employer"] == {"enterpriseNumber": world.people[0].employer}
    assert records[0]["placeOfWork"] == {"coordinates": {"latitude": 50.85, "longitude": 4.35}}
    row = world.relay.store.get("term-map-01", 1)
    assert row["ciao_id"] == str(records[0]["id"])
    assert row["validity"] == "valid"


def test_unresolved_badge_waits_for_the_registry(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=1)
    feed = TerminalFeed("term-unres-01", WORKPLACE)
    stranger = "nfc-a:DEADBEEF"
    insert(world.db, [feed.event(Kind.IN, stranger, time.time_ns() - 10**12)])
    for _ in range(5):
        world.relay.run_once()
    row = world.relay.store.get("term-unres-01", 1)
    assert row["state"] == "unknown_badge"
    assert row["last_error"] == "badge unknown: no worker is linked to it"
    assert world.verdicts == []
    assert sim.registrations() == []

    world.registry.enrol_badge(stranger, world.people[0].worker_ref)  # the employer fixes it
    world.run_until_final()
    assert world.relay.store.get("term-unres-01", 1)["state"] == "registered"
    assert len(sim.registrations()) == 1


def test_invalid_registration_is_rejected_with_remarks(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=2)
    sim.set_reference_data(dows={WORKPLACE: {world.people[0].employer}})
    feed = TerminalFeed("term-rej-01", WORKPLACE)
    insert(world.db, make_events([feed], [p.badge for p in world.people], 2))
    world.run_until_final()
    outcomes = {v.seq: v for _, v in world.verdicts}
    assert outcomes[1].outcome is Outcome.REGISTERED
    assert outcomes[2].outcome is Outcome.REJECTED
    assert "NOT KNOWN  AS BUILDER OR  SUBCONTRACTOR" in outcomes[2].reason
    row = world.relay.store.get("term-rej-01", 2)
    assert json.loads(row["remarks"]) == [outcomes[2].reason]


def test_alert_when_no_final_verdict_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SimServer(validation_delay_s=60) as slow:
        slow.register_client(CLIENT_ID, rsa_pair()[1])
        world = make_world(tmp_path, slow, workers=2, verdict_timeout_s=0.3)
        insert(
            world.db,
            make_events(
                [TerminalFeed("term-slow-01", WORKPLACE)], [p.badge for p in world.people], 3
            ),
        )
        with caplog.at_level(logging.WARNING, logger="siteclock.gateway"):
            deadline = time.monotonic() + 5
            while world.relay.counters["alert.no_verdict"] < 3 and time.monotonic() < deadline:
                world.relay.run_once()
                time.sleep(0.05)
            for _ in range(3):
                world.relay.run_once()
    assert world.relay.counters["alert.no_verdict"] == 3  # once per event, not once per turn
    assert world.relay.store.counts() == {"pending": 3}
    assert world.verdicts == []
    assert caplog.text.count("no CIaO verdict in time") == 3
    for person in world.people:
        assert person.inss not in caplog.text


def test_relay_thread_starts_and_stops(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=2)
    insert(
        world.db,
        make_events([TerminalFeed("term-thr-01", WORKPLACE)], [p.badge for p in world.people], 10),
    )
    world.relay.start()
    wait_until(lambda: len(world.verdicts) >= 10, timeout=10)
    world.relay.stop()
    assert len(world.verdicts) == 10
    assert not world.relay._thread.is_alive()


# --------------------------------------------------------------------------- the fault test

EVENTS = 3000
BATCH = 50


def _spawn_relay(tmp_path: Path, sim: SimServer, key_file: Path) -> subprocess.Popen[bytes]:
    return spawn_relay(tmp_path, sim.url, key_file, read_s=0.4, batch_limit=BATCH)


@pytest.mark.slow
def test_thousands_of_events_exactly_once_through_faults_and_kills(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=40, read_s=0.4, batch_limit=BATCH)
    world.relay.store.close()  # this process's relay starts only after the kills
    key_file = write_private_key(tmp_path / "ciao.pem", rsa_pair()[0])
    feeds = [TerminalFeed(f"term-{i:02d}", WORKPLACE) for i in range(3)]
    events = make_events(feeds, [p.badge for p in world.people], EVENTS)
    # Half up front; the rest arrives while the relay runs: one slice as each kill is set up
    # (so a POST is sent after the faults change, however fast the relay drained the queue),
    # and the last slice while the restarted relay is being hurt.
    slices = [EVENTS // 2, EVENTS * 2 // 3, EVENTS * 5 // 6, EVENTS]
    insert(world.db, events[: slices[0]])

    sim.set_faults(
        latency_s=0.002,
        error_rate=0.03,
        drop_rate=0.02,
        commit_then_hang_rate=0.05,
        commit_then_drop_rate=0.02,
        hang_s=0.6,
        token_ttl_s=3,
    )
    watch = sqlite3.connect(tmp_path / "gateway.db")

    def in_flight() -> int:
        sql = "SELECT count(*) FROM registrations WHERE state='submitted'"
        return watch.execute(sql).fetchone()[0]

    killed_in_flight = []

    # Kill 1 and 2: SIGKILL a relay process while it has a POST in flight.
    for kill, threshold in enumerate((400, 1000)):
        proc = _spawn_relay(tmp_path, sim, key_file)
        wait_for(
            lambda t=threshold: len(sim.sim.state.registrations) >= t,
            f"{threshold} registered",
            30,
            interval=0.01,
        )
        # Every POST now commits, then hangs past the client's timeout.
        calm = sim.set_faults(commit_then_hang_rate=1.0, error_rate=0.0, drop_rate=0.0)
        # A batch submitted from now on is sent after the change: wait for one such.
        wait_for(lambda: in_flight() == 0, "no POST in flight", 10, interval=0.01)
        insert(world.db, events[slices[kill] : slices[kill + 1]])
        wait_for(in_flight, "a POST in flight", 10, interval=0.01)
        time.sleep(0.1)  # inside the hang: committed at CIaO, "submitted" in our database
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_in_flight.append(in_flight())  # rows the dead relay was submitting
        sim.set_faults(calm, commit_then_hang_rate=0.05, error_rate=0.03, drop_rate=0.02)
    insert(world.db, events[slices[2] :])
    watch.close()

    # Restart in-process and keep hurting it: token expiry, 429 storms, 5xx bursts.
    from siteclock.gateway.relay import Relay

    relay = Relay(
        world.db,
        world.relay.client,
        world.registry,
        config=world.relay.config,
        on_verdict=lambda t, v: world.verdicts.append((t, v)),
    )
    world.relay = relay
    stop = threading.Event()
    issued = sim.stats["token.issued"]

    def chaos() -> None:
        # The first round starts once this relay holds a token (however fast it works), so the
        # expiry always lands on a token in use; later rounds are spaced so it gets work done.
        wait_until(lambda: stop.is_set() or sim.stats["token.issued"] > issued, timeout=30)
        for _ in range(4):
            sim.expire_tokens()
            sim.set_faults(rate_limit_burst=2, retry_after_s=1)
            if stop.wait(2.0):
                return
            sim.set_faults(error_burst=3)
            if stop.wait(2.0):
                return

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    try:
        world.run_until_final(timeout=70)
    finally:
        stop.set()
        chaos_thread.join()

    # The simulator's own record: every event exactly once, none missing, none twice.
    records = sim.registrations()
    total, duplicates = exactly_once_report(records)
    assert duplicates == []
    assert total == EVENTS
    by_badge = {p.badge: p for p in world.people}
    expected = {
        (
            by_badge[e.event.badge].inss,
            e.event.workplace,
            "in" if e.event.kind in (Kind.IN, Kind.BREAK_END) else "out",
            registration_date(e.event.wall_ns),
        )
        for e in events
    }
    recorded = {
        (r["ssin"], r["contractualRelationshipReference"], r["type"], r["registrationDate"])
        for r in records
    }
    assert recorded == expected
    assert relay.store.counts() == {"registered": EVENTS}
    # Every Retry-After was honoured, and the faults really happened.
    assert sim.throttles()
    assert sim.retry_after_violations() == []
    stats = sim.stats
    assert all(n > 0 for n in killed_in_flight), killed_in_flight  # each kill hit a POST
    assert stats["fault.commit_then_hang"] > 0
    assert stats["fault.drop"] + stats["fault.commit_then_drop"] > 0
    assert sum(stats[f"fault.{s}"] for s in ("500", "502", "503")) > 0
    assert stats["auth.expired"] > 0
    assert stats["token.issued"] > 3
    assert relay.counters["reconciled_found"] > 0
