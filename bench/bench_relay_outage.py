"""``relay_outage``: a two-hour NSSO outage with 20,000 taps arriving, then the recovery.

The simulator answers every request, token endpoint included, with 503 and ``Retry-After`` for
the first hour; in the second the token endpoint is back but the API answers 500 (no
Retry-After; a POST may or may not have been processed, so the relay must search before it
sends again), while 20,000 signed events reach
the gateway's inbox (spread over those two hours).
The real relay, with its production timings (backoff, Retry-After, poll interval, batch size),
keeps trying; then the service comes back and the backlog drains.

Time is compressed, not waited: the simulator, the CIaO client and the relay share one
:class:`~tests.support.clock.CompressedClock`, so every sleep (a Retry-After, a backoff, an
idle turn) moves the clock forward at once while real work still takes real time.

Figures, all from the simulator's own record where it can tell:

* ``registered``: events whose registration is valid at CIaO; ``dead_lettered``: events the
  relay gave up or left for a person (refused, rejected, needs_review);
* ``duplicates``: declarations the simulator registered more than once;
* ``retry_after_violations``: requests that reached the simulator before the Retry-After it had
  announced to that client (measured by the simulator, not by the relay);
* ``catch_up_s``: simulated seconds from the end of the outage until every event is registered.

Goal: dead_lettered 0, duplicates 0, retry_after_violations 0, registered == events.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from siteclock.gateway.ciao.client import CiaoClient, Timeouts
from siteclock.gateway.ciao.environments import for_local_sim
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay, RelayConfig
from tests.support.ciao import CLIENT_ID, exactly_once_report, populate, rsa_pair
from tests.support.clock import CompressedClock
from tests.support.inbox import TerminalFeed, create_inbox, insert, make_events

EVENTS = 20_000
OUTAGE_S = 2 * 3600.0
RETRY_AFTER_S = 60
VALIDATION_S = 60.0
IDLE_STEP_S = 2.0  # simulated seconds an idle relay turn lets pass
WORKERS = 300
WORKPLACE = "1Y1003SQ5VSSZ"
GIVE_UP_S = 6 * 3600.0  # simulated: a run that has not caught up by then has failed


def run() -> dict[str, Any]:
    # The relay logs each requeue and alert: thousands of lines in a two-hour outage.
    quiet = logging.getLogger("siteclock")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _run()
    finally:
        quiet.setLevel(level)


def _run() -> dict[str, Any]:
    clock = CompressedClock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimServer(validation_delay_s=VALIDATION_S, clock=clock.now, seed=3) as sim,
    ):
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        db = Path(tmp) / "gateway.db"
        create_inbox(db)
        registry = Registry(db, Path(tmp) / "inss.key")
        people = populate(registry, WORKERS, workplace=WORKPLACE)
        feeds = [TerminalFeed(f"term-{i:02d}", WORKPLACE) for i in range(6)]
        events = make_events(feeds, [p.badge for p in people], EVENTS)
        client = CiaoClient(
            for_local_sim(sim.url),
            client_id=CLIENT_ID,
            private_key_pem=rsa_pair()[0],
            timeouts=Timeouts(connect_s=3.0, read_s=30.0),
            clock=clock.now,
            sleep=clock.sleep,
        )
        relay = Relay(
            db, client, registry, config=RelayConfig(), on_verdict=lambda t, v: None,
            clock_ns=clock.ns,
        )  # fmt: skip
        started_real = time.perf_counter()
        outage_start = clock.now()
        sim.outage(OUTAGE_S / 2, status=503, retry_after_s=RETRY_AFTER_S)
        sim.outage(OUTAGE_S / 2, status=500, after_s=OUTAGE_S / 2, token_endpoint=False)
        outage_end = outage_start + OUTAGE_S
        arrived = 0
        caught_up_at = None
        max_attempts = 0
        while clock.now() - outage_start < GIVE_UP_S:
            # Taps reach the gateway evenly through the outage.
            due = min(EVENTS, int(EVENTS * (clock.now() - outage_start) / OUTAGE_S) + 1)
            if due > arrived:
                insert(db, events[arrived:due])
                arrived = due
            if not relay.run_once():
                clock.sleep(IDLE_STEP_S)
            if clock.now() < outage_end:
                continue
            counts = relay.store.counts()
            if arrived == EVENTS and counts.get("registered", 0) == EVENTS:
                caught_up_at = clock.now()
                break
        real_s = time.perf_counter() - started_real
        counts = relay.store.counts()
        max_attempts = relay.store.db.max_attempts()
        alerts_raised = relay.store.db.relay_alert_counts()
        relay.stop()
        registry.close()
        records = sim.registrations()
        total, duplicates = exactly_once_report(records)
        violations = sim.retry_after_violations()
        stats = sim.stats
    registered_at_ciao = sum(1 for r in records if r["validity"] == "valid")
    dead = sum(counts.get(s, 0) for s in ("refused", "rejected", "needs_review"))
    registered = min(counts.get("registered", 0), registered_at_ciao)
    goal_met = dead == 0 and not duplicates and not violations and registered == EVENTS == total
    return {
        "events": EVENTS,
        "outage_s": OUTAGE_S,
        "retry_after_s": RETRY_AFTER_S,
        "registered": registered,
        "dead_lettered": dead,
        "duplicates": len(duplicates),
        "retry_after_violations": len(violations),
        "catch_up_s": None if caught_up_at is None else round(caught_up_at - outage_end, 1),
        "searched_before_resending": relay.counters["reconciled_missing"],
        "calls_refused_in_outage": sum(
            n for k, n in stats.items() if k.startswith(("fault.outage.", "token.fault."))
        ),
        "max_attempts_of_an_event": max_attempts,
        "alerts_raised": alerts_raised,
        "relay_states": counts,
        "simulated_s": round(clock.now() - outage_start, 1),
        "real_s": round(real_s, 1),
        "goal": "dead_lettered 0, duplicates 0, retry_after_violations 0, all registered",
        "goal_met": goal_met,
    }
