"""The console alerts' operations on every backend: one open alert per key, resolution and
muting, the lists and counts the console shows, delivery bookkeeping, and the reads the alert
rules sweep (rejections and remarks, sequence issues, relay alerts, waiting registrations)."""

from __future__ import annotations

from siteclock.gateway.db import GatewayDB
from tests.contract.test_gateway_db import SITE, T, event

OFFLINE = "terminal_offline"
REJECTED = "registration_rejected"


def _raise_three(db: GatewayDB) -> None:
    assert db.raise_alert(f"offline:{T}", OFFLINE, T, "silent", "/t", 10) is True
    assert db.raise_alert(f"offline:{T}", OFFLINE, T, "still silent", "/t", 11) is False
    assert db.raise_alert("offline:t-roof-02", OFFLINE, "t-roof-02", "silent", "/t2", 20)
    assert db.raise_alert(f"rejected:{T}:1", REJECTED, SITE, "rejected", "/r", 30)


def test_an_alert_is_raised_once_per_key_while_open(db: GatewayDB) -> None:
    _raise_three(db)
    assert db.open_alert_keys() == {f"offline:{T}", "offline:t-roof-02", f"rejected:{T}:1"}
    assert db.open_alert_keys("offline:") == {f"offline:{T}", "offline:t-roof-02"}
    assert db.open_alert_keys("100%") == set()  # a LIKE wildcard in the prefix is literal
    assert db.resolve_alert(f"offline:{T}", "came back", 40) is True
    assert db.resolve_alert(f"offline:{T}", "came back", 41) is False  # resolved already
    assert db.raise_alert(f"offline:{T}", OFFLINE, T, "silent again", "/t", 50) is True
    # once_ever: an event's rejection stays one alert, even after someone resolved it
    assert db.resolve_alert(f"rejected:{T}:1", "handled", 60, by="boss") is True
    assert not db.raise_alert(f"rejected:{T}:1", REJECTED, SITE, "again", "/r", 70, once_ever=True)
    assert db.open_alert_keys() == {f"offline:{T}", "offline:t-roof-02"}


def test_alerts_listed_newest_first_filtered_and_counted(db: GatewayDB) -> None:
    _raise_three(db)
    newest_first = [row["key"] for row in db.alerts_list()]
    assert newest_first == [f"rejected:{T}:1", "offline:t-roof-02", f"offline:{T}"]
    assert [row["key"] for row in db.alerts_list(offset=1, limit=1)] == ["offline:t-roof-02"]
    assert [row["subject"] for row in db.alerts_list(kinds=[OFFLINE])] == ["t-roof-02", T]
    assert [row["key"] for row in db.alerts_list(subjects=[SITE])] == [f"rejected:{T}:1"]
    assert db.alerts_list(kinds=[]) == []  # no kind wanted: nothing, not everything
    assert db.count_alerts() == 3
    assert db.count_alerts(kinds=[OFFLINE], subjects=[T, "t-roof-02"]) == 2
    assert db.count_alerts(subjects=[]) == 0

    (first,) = [row for row in db.alerts_list() if row["key"] == f"offline:{T}"]
    assert db.resolve_alert(None, "fixed", 90, by="boss", alert_id=first["id"]) is True
    resolved = db.alert(first["id"])
    assert resolved is not None
    assert (resolved["resolved_ns"], resolved["resolution"], resolved["resolved_by"]) == (
        90,
        "fixed",
        "boss",
    )
    assert db.alert(first["id"] + 1000) is None
    assert db.count_alerts() == 2
    assert db.count_alerts(open_only=False) == 3
    assert [row["key"] for row in db.alerts_list(open_only=False, kinds=[OFFLINE])] == [
        "offline:t-roof-02",
        f"offline:{T}",
    ]
    assert db.alert_counts() == {(OFFLINE, True): 1, (OFFLINE, False): 1, (REJECTED, True): 1}


def test_a_person_resolved_alert_stays_muted_until_its_condition_clears(db: GatewayDB) -> None:
    _raise_three(db)
    db.resolve_alert(f"offline:{T}", "known, the site is closed", 40, by="boss")
    db.resolve_alert("offline:t-roof-02", "came back", 41)  # by the system: not muted
    assert db.muted_alert_keys([OFFLINE]) == {f"offline:{T}"}
    assert db.muted_alert_keys([REJECTED]) == set()
    db.unmute_alert(f"offline:{T}", 50)
    assert db.muted_alert_keys([OFFLINE]) == set()
    (muted,) = [row for row in db.alerts_list(open_only=False) if row["key"] == f"offline:{T}"]
    assert muted["condition_cleared_ns"] == 50
    assert db.alert(muted["id"])["condition_cleared_ns"] == 50


def test_alert_delivery_sent_failed_and_resolution_sent(db: GatewayDB) -> None:
    _raise_three(db)
    due = db.alerts_to_send(now_ns=100)
    assert [row["key"] for row in due] == [f"offline:{T}", "offline:t-roof-02", f"rejected:{T}:1"]
    ids = [row["id"] for row in due]
    assert [row["id"] for row in db.alerts_to_send(now_ns=100, limit=1)] == ids[:1]

    db.alerts_send_failed(ids[1:], "smtp: connection refused", next_ns=200)
    db.mark_alerts_sent(ids[:1], 110)
    assert db.alerts_to_send(now_ns=150) == []  # the failed ones wait for their next try
    retried = db.alert(ids[1])
    assert (retried["send_attempts"], retried["send_error"]) == (1, "smtp: connection refused")
    assert [row["id"] for row in db.alerts_to_send(now_ns=200)] == ids[1:]

    db.mark_alerts_sent(ids[1:], 210)
    assert db.alerts_to_send(now_ns=10**6) == []
    db.resolve_alert(f"offline:{T}", "came back", 300)  # its resolution is news to send
    assert [row["id"] for row in db.alerts_to_send(now_ns=300)] == ids[:1]
    db.mark_alerts_sent(ids[:1], 310)
    sent = db.alert(ids[0])
    assert (sent["sent_ns"], sent["resolve_sent_ns"], sent["send_error"]) == (110, 310, "")
    assert db.alerts_to_send(now_ns=10**6) == []


def test_alert_marks_only_move_forward(db: GatewayDB) -> None:
    assert db.alert_mark("verdicts") == 0
    db.save_alert_mark("verdicts", 500)
    db.save_alert_mark("verdicts", 300)  # an older sweep finishing late
    db.save_alert_mark("sequence", 7)
    assert db.alert_mark("verdicts") == 500
    assert db.alert_mark("sequence") == 7


def _registrations(db: GatewayDB, seqs: range) -> None:
    db.store_events([event(seq) for seq in seqs])
    db.take_new_events(1, full=True)


def test_the_registration_reads_of_the_alert_rules(db: GatewayDB) -> None:
    _registrations(db, range(1, 7))
    db.set_registrations([
        ((T, 1), {"state": "rejected", "last_error": "no such worker", "workplace": SITE,
                  "updated_ns": 100}),
        ((T, 2), {"state": "registered", "remarks": ["late"], "updated_ns": 200}),
        ((T, 3), {"state": "registered", "updated_ns": 300}),
        ((T, 4), {"state": "refused", "updated_ns": 50}),
        ((T, 5), {"state": "ambiguous", "created_ns": 5}),
    ])  # fmt: skip
    issues = db.verdict_issues_since(100)
    assert [(r["seq"], r["state"], r["remarks"]) for r in issues] == [
        (1, "rejected", "[]"),
        (2, "registered", '["late"]'),
    ]
    assert issues[0]["last_error"] == "no such worker"
    assert issues[0]["workplace"] == SITE
    assert [r["seq"] for r in db.verdict_issues_since(0, limit=2)] == [4, 1]

    states = db.registration_states([(T, 2), (T, 6), (T, 99), ("t-nobody", 1)])
    assert sorted(states) == [(T, 2), (T, 6)]
    assert (states[(T, 2)]["state"], states[(T, 2)]["remarks"]) == ("registered", '["late"]')
    assert states[(T, 6)]["state"] == "queued"
    many = db.registration_states([(T, seq) for seq in range(1, 1001)])  # several queries
    assert len(many) == 6

    waiting = db.waiting_registrations(["queued", "ambiguous", "needs_review"])
    assert waiting == {"queued": (1, 1_000), "ambiguous": (1, 5)}


def test_sequence_issues_since(db: GatewayDB) -> None:
    db.record_decisions([
        (T, 1, SITE, "w-1", 10, "in", "in", "", 100),
        (T, 2, SITE, "w-1", 20, "in", "out", "in_twice", 200),
        (T, 3, SITE, "w-2", 30, "out", "out", "out_without_in", 150),
    ])  # fmt: skip
    found = db.sequence_issues_since(150)
    assert [(r["seq"], r["issues"], r["decided_ns"]) for r in found] == [
        (3, "out_without_in", 150),
        (2, "in_twice", 200),
    ]
    assert (found[1]["workplace"], found[1]["kind"], found[1]["ciao_type"]) == (SITE, "in", "out")
    assert [r["seq"] for r in db.sequence_issues_since(0, limit=1)] == [3]
    assert db.sequence_issues_since(201) == []


def test_relay_alert_rows_open_and_cleared(db: GatewayDB) -> None:
    assert db.relay_alert_rows() == []
    db.raise_relay_alert("ciao_down", "CIaO unreachable", 10)
    db.raise_relay_alert("token", "token refused", 20)
    db.clear_relay_alert("ciao_down", 30)
    rows = sorted(tuple(row) for row in db.relay_alert_rows())
    assert rows == [("ciao_down", "CIaO unreachable", 10, 30), ("token", "token refused", 20, None)]
    assert db.relay_alert_rows()[0]["cause"] in {"ciao_down", "token"}
