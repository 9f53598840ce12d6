"""``relay``: registrations per second from a backlog of stored events to the CIaO simulator.

A backlog of 20,000 signed events sits in the gateway's inbox; the simulator adds 50 ms to every
request. Two figures from the same run against the same simulator:

* ``ceiling_per_s``: a bare bulk client (one keep-alive session, prebuilt JSON, batches at the
  profile's limit, one after the other) - what the service allows at this latency;
* ``relay_per_s``: the real relay (SQLite reads and state commits, registry lookups with INSS
  decryption, item mapping, the CIaO client with its token and policies) until every event is
  created at CIaO.

``relay_ratio_to_ceiling`` = relay / ceiling; the goal is >= 0.7.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import requests

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


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, SimServer(validation_delay_s=3600) as sim:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        db = Path(tmp) / "gateway.db"
        create_inbox(db)
        registry = Registry(db, Path(tmp) / "inss.key")
        people = populate(registry, WORKERS)
        feeds = [TerminalFeed(f"term-{i:02d}", "1Y1003SQ5VSSZ") for i in range(4)]
        events = make_events(feeds, [p.badge for p in people], EVENTS)
        insert(db, events)
        by_badge = {p.badge: p for p in people}
        limit = sim.profile.contract.batch_limit
        items = [
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
        sim.set_faults(latency_s=LATENCY_S)
        ceiling = _ceiling(sim, items, limit)

        client = client_for(sim.url, read_s=30)
        config = RelayConfig(idle_s=0.01, poll_interval_s=3600, verdict_timeout_s=3600)
        relay = Relay(db, client, registry, config=config, on_verdict=lambda t, v: None)
        started = time.perf_counter()
        while relay.run_once():
            pass
        relay_rate = EVENTS / (time.perf_counter() - started)
        if relay.store.counts() != {"pending": EVENTS}:
            raise RuntimeError(f"relay did not create every event: {relay.store.counts()}")
        relay.stop()
        registry.close()
    ratio = relay_rate / ceiling
    return {
        "events": EVENTS,
        "added_latency_ms": LATENCY_S * 1000,
        "batch_limit": limit,
        "ceiling_per_s": round(ceiling, 1),
        "relay_per_s": round(relay_rate, 1),
        "relay_ratio_to_ceiling": round(ratio, 3),
        "goal": f"relay_ratio_to_ceiling >= {GOAL}",
        "goal_met": ratio >= GOAL,
    }
