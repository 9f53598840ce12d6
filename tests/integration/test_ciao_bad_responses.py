"""Bad input from the service: each kind becomes a clear, counted state and loses no event.

The simulator answers one registerInBulk with a malformed JSON body (after committing), an HTML
page (without committing), extra unknown fields (committed, otherwise valid) or a problem+json
of a type nobody documented (not committed). The relay must end with every event registered
exactly once, and the failure counted under its own name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.protocol import Outcome
from tests.support.ciao import exactly_once_report, make_world, running_sim
from tests.support.inbox import TerminalFeed, insert, make_events

EVENTS = 6


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05) as server:
        yield server


@pytest.mark.parametrize(
    ("kind", "client_counter", "relay_counter", "committed_first"),
    [
        ("malformed_json", "bad_response.malformed_json", "bad_response.malformed_json", True),
        ("html", "bad_response.html", "bad_response.html", False),
        ("unknown_problem", "bad_response.unknown_problem", "bad_response.unknown_problem", False),
        ("unexpected_fields", "unexpected_fields", None, True),
    ],
)
def test_bad_body_is_counted_and_no_event_is_lost_or_doubled(
    tmp_path: Path,
    sim: SimServer,
    kind: str,
    client_counter: str,
    relay_counter: str | None,
    committed_first: bool,
) -> None:
    world = make_world(tmp_path, sim, workers=3)
    feed = TerminalFeed("term-bad-01", "1Y1003SQ5VSSZ")
    insert(world.db, make_events([feed], [p.badge for p in world.people], EVENTS))
    sim.set_faults(bad_body=kind, bad_body_count=1)

    world.run_until_final()

    client, relay = world.relay.client, world.relay
    assert client.stats[client_counter] == 1
    if relay_counter:
        assert relay.counters[relay_counter] == 1
    total, duplicates = exactly_once_report(sim.registrations())
    assert total == EVENTS
    assert duplicates == []
    assert relay.store.counts() == {"registered": EVENTS}
    assert sorted(v.seq for _, v in world.verdicts) == list(range(1, EVENTS + 1))
    assert all(v.outcome is Outcome.REGISTERED for _, v in world.verdicts)
    if committed_first and kind != "unexpected_fields":
        # The garbled 200 hid a commit: found by search, not sent twice.
        assert relay.counters["reconciled_found"] == EVENTS
    if kind == "html":
        # Nothing was committed behind the HTML page: searched, not found, sent again.
        assert relay.counters["reconciled_missing"] == EVENTS


def test_permanent_refusal_ends_only_the_named_item(tmp_path: Path, sim: SimServer) -> None:
    world = make_world(tmp_path, sim, workers=3)
    # A second workplace whose address the service finds incomplete (no postCode).
    world.registry.add_workplace("2Y1003SQ5VSSZ", address={"municipalityName": "Gent"})
    good_feed = TerminalFeed("term-good-01", "1Y1003SQ5VSSZ")
    bad_feed = TerminalFeed("term-bad-02", "2Y1003SQ5VSSZ")
    badges = [p.badge for p in world.people]
    events = make_events([good_feed], badges, 4) + make_events([bad_feed], badges, 1)
    insert(world.db, events)

    world.run_until_final()

    store = world.relay.store
    assert store.counts() == {"registered": 4, "refused": 1}
    refused = store.get("term-bad-02", 1)
    assert refused["state"] == "refused"
    # The issue that names the field is kept, not only the title.
    assert "item.placeOfWork.address.postCode" in refused["last_error"]
    problem = json.loads(refused["problem"])
    assert problem["status"] == 400
    assert problem["type"].endswith("badRequest")
    assert [i["name"] for i in problem["issues"]] == ["item.placeOfWork.address.postCode"]
    assert world.relay.counters["permanent.badRequest"] == 1
    [(terminal, verdict)] = [(t, v) for t, v in world.verdicts if v.outcome is Outcome.REJECTED]
    assert terminal == "term-bad-02"
    assert verdict.reason.startswith("refused by CIaO:")
    assert len(sim.registrations()) == 4
