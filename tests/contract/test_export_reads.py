"""The reads behind the evidence export and the presence reports, on every backend: a worker's
badges (a re-linked badge keeps its past), their taps on one workplace in a period with their
relay rows, the signing terminals' keys, and the decided taps a presence report sums."""

from __future__ import annotations

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.reports import presence
from tests.contract.test_gateway_db import SITE, T, event

OTHER_SITE = "1Y1003SQ5VSSX"
HOUR = 3600 * 10**9
DAY_START = 1_764_748_800 * 10**9  # 2025-12-03 08:00 in Brussels (07:00 UTC)


def _worker(db: GatewayDB, ref: str, name: str) -> None:
    db.save_worker(ref, name, b"sealed", "0123456789", "enterprise", "employee")


def _two_workers_one_badge_moved(db: GatewayDB) -> None:
    """w-1 tapped with badge 0A (seqs 1-2) then the badge went to w-2 (seq 3); w-1 now has 0B."""
    _worker(db, "w-1", "Ana")
    _worker(db, "w-2", "Bob")
    db.link_badge("nfc-a:0A", "w-2")
    db.link_badge("nfc-a:0B", "w-1")
    db.store_events([
        event(1, badge="nfc-a:0A", wall_ns=100),
        event(2, badge="nfc-a:0A", wall_ns=200),
        event(3, badge="nfc-a:0A", wall_ns=300),
        event(4, badge="nfc-a:0B", wall_ns=400),
        event(5, badge="nfc-a:0B", wall_ns=900),  # after the period
        event(1, terminal="t-roof-02", badge="nfc-a:0B", wall_ns=150),  # signed by another
    ])  # fmt: skip
    db.take_new_events(1, full=True)
    db.set_registrations([
        ((T, 1), {"state": "registered", "worker_ref": "w-1", "ciao_id": "c-1",
                  "remarks": ["late"], "ciao_type": "in"}),
        ((T, 2), {"state": "rejected", "worker_ref": "w-1", "ciao_type": "out"}),
        ((T, 3), {"state": "registered", "worker_ref": "w-2", "ciao_id": "c-3"}),
    ])  # fmt: skip


def test_a_workers_badges_include_the_ones_their_past_taps_used(db: GatewayDB) -> None:
    _two_workers_one_badge_moved(db)
    assert db.badges_of_worker("w-1") == ["nfc-a:0A", "nfc-a:0B"]
    assert db.badges_of_worker("w-2") == ["nfc-a:0A"]
    assert db.badges_of_worker("w-nobody") == []


def test_evidence_events_of_a_worker_on_a_workplace_in_a_period(db: GatewayDB) -> None:
    _two_workers_one_badge_moved(db)
    db.index_inbox_by_badge()  # what the export does first; twice is harmless
    db.index_inbox_by_badge()
    badges = db.badges_of_worker("w-1")
    rows = db.evidence_events("w-1", badges, SITE, 100, 900)
    # seq 3 is the re-linked badge's tap, given to w-2: not w-1's evidence
    keys = [(r["terminal"], r["seq"]) for r in rows]
    assert keys == [(T, 1), ("t-roof-02", 1), (T, 2), (T, 4)]
    first = rows[0]
    assert (first["state"], first["ciao_id"], first["remarks"], first["ciao_type"]) == (
        "registered",
        "c-1",
        '["late"]',
        "in",
    )
    assert bytes(first["body"]) == b"body-1"
    assert bytes(first["digest"]) == event(1)[3]
    assert (first["badge"], first["wall_ns"], first["envelope"]) == ("nfc-a:0A", 100, 1)
    assert rows[3]["state"] == "queued"
    assert rows[3]["worker_ref"] is None  # not resolved yet: still the badge's tap
    assert db.evidence_events("w-1", badges, OTHER_SITE, 0, 10**6) == []
    assert db.evidence_events("w-1", [], SITE, 0, 10**6) == []
    assert [r["seq"] for r in db.evidence_events("w-2", ["nfc-a:0A"], SITE, 0, 10**6)] == [3]


def test_the_keys_of_the_signing_terminals_rotated_ones_too(db: GatewayDB) -> None:
    for terminal in (T, "t-roof-02"):
        db.add_terminal(terminal, SITE, "active", 1)
    db.add_terminal_key(T, "k1", "ed25519", b"\x01" * 32, 10)
    db.add_terminal_key(T, "k2", "ed25519", b"\x02" * 32, 20)
    db.revoke_terminal_key(T, "k1", 25)
    db.add_terminal_key("t-roof-02", "k9", "ed25519", b"\x09" * 32, 5)
    rows = db.terminal_key_rows([T])
    assert [(r["kid"], r["valid_from_ns"], r["revoked_at_ns"]) for r in rows] == [
        ("k1", 10, 25),
        ("k2", 20, None),
    ]
    assert bytes(rows[0]["public_key"]) == b"\x01" * 32
    assert rows[0]["alg"] == "ed25519"
    both = db.terminal_key_rows(["t-roof-02", T])
    assert [(r["terminal"], r["kid"]) for r in both] == [(T, "k1"), (T, "k2"), ("t-roof-02", "k9")]
    assert db.terminal_key_rows([]) == []


def _a_day_decided(db: GatewayDB) -> None:
    _worker(db, "w-1", "Ana")  # w-2 has no registry row any more: name ''
    at = DAY_START
    db.record_decisions([
        (T, 1, SITE, "w-1", at, "in", "in", "", 1),
        (T, 2, SITE, "w-1", at + 4 * HOUR, "out", "out", "", 2),
        (T, 3, SITE, "w-1", at + 5 * HOUR, "in", "in", "", 3),
        (T, 4, SITE, "w-1", at + 8 * HOUR, "out", "out", "", 4),
        (T, 5, OTHER_SITE, "w-1", at + 9 * HOUR, "in", "in", "", 5),
        (T, 6, SITE, "w-2", at + HOUR, "out", "out", "out_without_in", 6),
        (T, 7, SITE, "w-1", at + 30 * HOUR, "in", "in", "", 7),  # the next day: outside
    ])  # fmt: skip


def test_presence_taps_by_workplace_worker_and_time(db: GatewayDB) -> None:
    _a_day_decided(db)
    rows = db.presence_taps(DAY_START, DAY_START + 24 * HOUR)
    assert [
        (r["workplace"], r["worker_ref"], r["name"], r["wall_ns"] - DAY_START) for r in rows
    ] == [
        (OTHER_SITE, "w-1", "Ana", 9 * HOUR),
        (SITE, "w-1", "Ana", 0),
        (SITE, "w-1", "Ana", 4 * HOUR),
        (SITE, "w-1", "Ana", 5 * HOUR),
        (SITE, "w-1", "Ana", 8 * HOUR),
        (SITE, "w-2", "", HOUR),
    ]
    assert rows[-1]["issues"] == "out_without_in"
    assert (rows[1]["kind"], rows[1]["ciao_type"]) == ("in", "in")
    only = db.presence_taps(DAY_START, DAY_START + 24 * HOUR, workplace=SITE, worker_ref="w-2")
    assert [r["wall_ns"] for r in only] == [DAY_START + HOUR]
    assert db.presence_taps(0, DAY_START) == []


def test_the_presence_report_reads_the_same_days_on_every_backend(db: GatewayDB) -> None:
    _a_day_decided(db)
    days = presence(db, DAY_START, DAY_START + 24 * HOUR, workplace=SITE)
    summary = [(d.worker_ref, d.name, d.hours, d.breaks, d.open, d.issues) for d in days]
    assert summary == [
        ("w-1", "Ana", 7.0, 1, False, set()),
        ("w-2", "", 0.0, 0, False, {"out_without_in"}),
    ]
