"""``relay``: registrations per second from a backlog of stored events to the CIaO simulator.

A backlog of 20,000 signed events sits in the gateway's inbox; the simulator adds 50 ms to every
request. Two figures from the same run against the same simulator:

* ``ceiling_per_s``: a bare bulk client (one keep-alive session, prebuilt JSON, batches at the
  profile's limit, one after the other) - what the service allows at this latency;
* ``relay_per_s``: the real relay (SQLite reads and state commits, registry lookups with INSS
  decryption, item mapping, the CIaO client with its token and policies) until every event is
  created at CIaO.

``relay_ratio_to_ceiling`` = median relay / median ceiling; the goal is >= 0.7.

The two are measured interleaved over :data:`bench.rounds.ROUNDS` rounds (:mod:`bench.rounds`):
each round stores another backlog of :data:`EVENTS` (the terminals' chains continue), which
the ceiling client sends as prebuilt items and the relay then relays from the inbox, in an
order that alternates from round to round.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench import rounds
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay, RelayConfig, registration_date
from tests.support.ciao import CLIENT_ID, client_for, populate, rsa_pair
from tests.support.inbox import TerminalFeed, create_inbox, insert, make_events

EVENTS = 20_000
LATENCY_S = 0.05
WORKERS = 200
GOAL = 0.7


def _ceiling(sim: SimServer, items: list[dict[str, Any]], limit: int) -> float:
    token = client_for(sim.url).tokens.get()
    url = sim.url + sim.profile.api_path("register")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    for i in range(0, len(items), limit):
        resp = session.post(url, json={"items": items[i : i + limit]}, timeout=(3, 30))
        resp.raise_for_status()
    return len(items) / (time.perf_counter() - started)


def _items(sim: SimServer, events: list[Any], by_badge: dict[str, Any]) -> list[dict[str, Any]]:
    """The CIaO items for ``events``, built before the clock starts."""
    return [
        {
            "registrationDate": registration_date(e.event.wall_ns),
            "ssin": by_badge[e.event.badge].inss,
            "type": sim.profile.ciao_type(e.event.kind),
            "employer": {"enterpriseNumber": by_badge[e.event.badge].employer},
            "placeOfWork": {"coordinates": {"latitude": 50.85, "longitude": 4.35}},
            "contractualRelationshipReference": "1Y1003SQ5VSSZ",
        }
        for e in events
    ]


def _relay_rate(relay: Relay) -> float:
    created_before = relay.store.counts().get("pending", 0)
    started = time.perf_counter()
    while relay.run_once():
        pass
    rate = EVENTS / (time.perf_counter() - started)
    if relay.store.counts() != {"pending": created_before + EVENTS}:
        raise RuntimeError(f"relay did not create every event: {relay.store.counts()}")
    return rate


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, SimServer(validation_delay_s=3600) as sim:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        db = Path(tmp) / "gateway.db"
        create_inbox(db)
        registry = Registry(db, Path(tmp) / "inss.key")
        people = populate(registry, WORKERS)
        feeds = [TerminalFeed(f"term-{i:02d}", "1Y1003SQ5VSSZ") for i in range(4)]
        by_badge = {p.badge: p for p in people}
        limit = sim.profile.contract.batch_limit
        sim.set_faults(latency_s=LATENCY_S)
        client = client_for(sim.url, read_s=30)
        config = RelayConfig(idle_s=0.01, poll_interval_s=3600, verdict_timeout_s=3600)
        relay = Relay(db, client, registry, config=config, on_verdict=lambda t, v: None)
        backlog: list[list[dict[str, Any]]] = []

        def store_backlog(_round: int) -> None:
            events = make_events(feeds, [p.badge for p in people], EVENTS)
            insert(db, events)
            backlog[:] = [_items(sim, events, by_badge)]

        rates = rounds.interleaved(
            {
                "ceiling": lambda: _ceiling(sim, backlog[0], limit),
                "relay": lambda: _relay_rate(relay),
            },
            before_round=store_backlog,
        )
        ceiling, relayed = rates["ceiling"], rates["relay"]
        relay.stop()
        registry.close()
    ratio = rounds.median(relayed) / rounds.median(ceiling)
    return {
        "events": EVENTS,
        "rounds": len(relayed),
        "added_latency_ms": LATENCY_S * 1000,
        "batch_limit": limit,
        **rounds.figure("ceiling_per_s", ceiling),
        **rounds.figure("relay_per_s", relayed),
        **rounds.ratio_of_medians("relay_ratio_to_ceiling", relayed, ceiling, digits=3),
        "goal": f"relay_ratio_to_ceiling >= {GOAL}",
        "goal_met": ratio >= GOAL,
    }
