"""The reads the sequence check, the site view, the registry and the terminal records rely on,
on every backend: a worker's undecided taps and newest stored tap (self-tests and enrolment
claims left out), the site view's version, events' flags, workers and workplaces read back, a
terminal moved and audited, every event's journey, the relay's attempts."""

from __future__ import annotations

import json

from siteclock.gateway.db import GatewayDB
from tests.contract.test_gateway_db import SITE, T, event

OTHER_SITE = "1Y1003SQ5VSSX"
BADGE = "nfc-a:0A"
MOVED = json.dumps({"from": SITE, "note": "100% sure"})  # a literal % in a parameter


def _taps(db: GatewayDB) -> None:
    db.store_events([
        event(1, wall_ns=100, received_ns=100),
        event(2, wall_ns=200, received_ns=200, flags=("selftest",)),  # not attendance
        event(3, wall_ns=300, received_ns=300, flags=("clock_unsynced",)),
        event(4, wall_ns=400, received_ns=400),  # claimed by a badge enrolment below
        event(5, wall_ns=10_000, received_ns=500),  # dated far after it arrived
        event(6, wall_ns=350, received_ns=350, badge="nfc-a:0B"),
    ])  # fmt: skip
    db.take_new_events(1, full=True)
    db.set_registrations([((T, 4), {"state": "enrolment"})])


def test_a_badges_undecided_taps_and_its_newest_stored_one(db: GatewayDB) -> None:
    _taps(db)
    db.index_inbox_by_badge()
    db.record_decisions([(T, 1, SITE, "w-1", 100, "in", "in", "", 150)])
    undecided = db.undecided_taps([BADGE], 0, 10**6, SITE)
    assert [(t, seq, kind, wall) for t, seq, kind, wall, _ in undecided] == [
        (T, 3, "in", 300),
        (T, 5, "in", 10_000),
    ]  # 1 decided, 2 a self-test, 4 claimed
    assert undecided[0][4] == '["clock_unsynced"]'
    assert [row[1] for row in db.undecided_taps([BADGE, "nfc-a:0B"], 300, 400, SITE)] == [6]
    assert db.undecided_taps([BADGE], 0, 10**6, OTHER_SITE) == []

    assert tuple(db.newest_stored_tap(BADGE, 0, SITE, future_slack_ns=10**6)) == ("in", 10_000)
    # a tap dated more than the slack after it arrived is not trusted as the newest
    assert tuple(db.newest_stored_tap(BADGE, 0, SITE, future_slack_ns=100)) == ("in", 300)
    assert db.newest_stored_tap(BADGE, 300, SITE, future_slack_ns=100) is None
    assert db.newest_stored_tap(BADGE, 0, OTHER_SITE, future_slack_ns=10**6) is None


def test_the_site_views_version_moves_with_each_decision_and_event(db: GatewayDB) -> None:
    assert db.sequence_version() == (0, 0)
    db.store_events([event(1), event(2)])
    decided, stored = db.sequence_version()
    assert decided == 0
    assert stored > 0
    db.record_decisions([(T, 1, SITE, "w-1", 10, "in", "in", "", 20)])
    assert db.sequence_version()[0] > 0
    assert db.sequence_version()[1] == stored
    db.store_events([event(3)])
    assert db.sequence_version()[1] > stored


def test_flags_of_stored_events(db: GatewayDB) -> None:
    db.store_events([event(1, flags=("selftest", "clock_unsynced"), received_ns=7), event(2)])
    found = dict(db.inbox_flags([(T, 1), (T, 2), (T, 3)]))
    assert found == {
        (T, 1): (frozenset({"selftest", "clock_unsynced"}), 7),
        (T, 2): (frozenset(), 1_000),
    }
    assert len(db.inbox_flags([(T, seq) for seq in range(1, 1000)])) == 2  # several queries


def test_workers_and_workplaces_read_back(db: GatewayDB) -> None:
    assert db.worker_exists("w-1") is False
    assert db.worker_row("w-1") is None
    db.save_worker("w-1", "Ana", b"\x00sealed", "0123456789", "enterprise", "employee")
    db.save_worker("w-1", "Ana B.", b"\x01sealed", "0123456789", "enterprise", "employee")
    db.link_badge(BADGE, "w-1")
    db.link_badge("nfc-a:0B", "w-1")
    assert db.worker_exists("w-1") is True
    ref, name, sealed, employer, kind, capacity = db.worker_row("w-1")
    assert (ref, name, bytes(sealed), employer, kind, capacity) == (
        "w-1", "Ana B.", b"\x01sealed", "0123456789", "enterprise", "employee",
    )  # fmt: skip
    assert sorted(db.worker_badges("w-1")) == [BADGE, "nfc-a:0B"]
    assert db.worker_badges("w-2") == []

    assert db.workplace_row(SITE) is None
    db.save_workplace(SITE, 50.85, 4.35, None)
    db.save_workplace(SITE, 50.5, 4.5, '{"street": "Rue Haute"}')  # replaced
    assert tuple(db.workplace_row(SITE)) == (SITE, 50.5, 4.5, '{"street": "Rue Haute"}')


def test_a_terminal_moved_to_another_workplace_and_audited(db: GatewayDB) -> None:
    db.add_terminal(T, SITE, "active", 1)
    db.set_terminal_workplace(T, OTHER_SITE)
    db.audit_terminal(T, "moved", MOVED, 10)
    db.audit_terminal(T, "renamed", "{}", 20)
    db.audit_terminal("t-roof-02", "enrolled", "{}", 30)
    workplace, status, _keys = db.terminal(T)
    assert (workplace, status) == (OTHER_SITE, "active")
    trail = [tuple(row) for row in db.terminal_audit_rows(T)]
    assert trail == [(20, "renamed", "{}"), (10, "moved", MOVED)]
    assert [row["action"] for row in db.terminal_audit_rows(T, limit=1)] == ["renamed"]


def test_every_events_journey_and_the_relays_attempts(db: GatewayDB) -> None:
    assert db.max_attempts() == 0
    db.store_events([event(2, received_ns=20), event(1, received_ns=10)])
    db.store_events([event(3, received_ns=30)])
    db.take_new_events(1, full=False)
    db.set_registrations([
        ((T, 1), {"state": "registered", "ciao_id": "c-1", "validity": "valid",
                  "notified": 1, "attempts": 2}),
        ((T, 2), {"state": "rejected", "last_error": "no contract", "attempts": 1}),
    ])  # fmt: skip
    db.store_events([event(4, received_ns=40)])  # not taken by the relay yet
    journeys = db.event_journeys()
    assert [(r["seq"], r["state"]) for r in journeys] == [
        (1, "registered"),
        (2, "rejected"),
        (3, "queued"),
        (4, None),
    ]  # in arrival order
    first = journeys[0]
    assert (first["ciao_id"], first["validity"], first["notified"], first["badge"]) == (
        "c-1",
        "valid",
        1,
        BADGE,
    )
    assert journeys[1]["last_error"] == "no contract"
    assert db.max_attempts() == 2
