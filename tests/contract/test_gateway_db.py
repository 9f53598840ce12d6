"""The contract every gateway-database backend keeps (run on each backend in conftest.py).

Transactions, migrations, and each named state change as the stores rely on it: the inbox's
exactly-once, the relay's claim-submit-verdict-requeue walk, a badge enrolment's claim winning
over the relay, single-use enrolment tokens, the terminal and worker registries.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.db.schema import MIGRATIONS

T = "t-hall-01"
SITE = "1Y1003SQ5VSSZ"


class Boom(Exception):
    pass


def event(seq: int, *, terminal: str = T, flags: tuple[str, ...] = (), badge: str = "nfc-a:0A",
          wall_ns: int | None = None, received_ns: int = 1_000) -> tuple:  # fmt: skip
    digest = bytes([seq % 256]) * 32
    return (terminal, seq, f"ev-{terminal}-{seq}", digest, b"body-%d" % seq, "ed25519", "kid",
            b"sig", SITE, "in", badge, wall_ns if wall_ns is not None else seq * 10**9,
            json.dumps(sorted(flags)), received_ns, 1)  # fmt: skip


def _failing_block(db: GatewayDB, row: tuple, *, alert_seq: int | None = None) -> None:
    """An ``atomic()`` block that writes, then fails."""
    with db.atomic():
        db.store_events([row])
        if alert_seq is not None:
            db.record_security_alert(T, alert_seq, "seq_gap", "why", at_ns=2)
        raise Boom


# ---------------------------------------------------------------------- transactions, schema


def test_a_fresh_database_has_every_migration_recorded(open_db: Callable[[], GatewayDB]) -> None:
    db = open_db()
    assert db.schema_version() == MIGRATIONS[-1].version
    again = open_db()  # a restart, or a second process on the same database
    assert again.migrate() == []
    assert again.schema_version() == MIGRATIONS[-1].version


def test_atomic_commits_together_and_rolls_back_together(db: GatewayDB) -> None:
    with db.atomic():
        db.store_events([event(1)])
        db.record_security_alert(T, 1, "seq_gap", "why", at_ns=1)
    with pytest.raises(Boom):
        _failing_block(db, event(2), alert_seq=2)
    assert db.count_events() == 1
    assert db.security_alerts() == [(T, 1, "seq_gap")]


def test_an_inner_atomic_block_rolls_back_alone(db: GatewayDB) -> None:
    with db.atomic():
        db.store_events([event(1)])
        with pytest.raises(Boom):
            _failing_block(db, event(2))
        with db.atomic():
            db.store_events([event(3)])
    assert [seq for seq, _, _ in db.event_keys(T)] == [1, 3]


def test_a_failed_statement_leaves_the_transaction_usable_for_the_next(db: GatewayDB) -> None:
    db.store_events([event(1)])
    with pytest.raises(Exception, match=r"(?i)unique"):  # the backend's own error type
        db.store_events([event(1)])  # the same key twice: refused by the primary key
    db.store_events([event(2)])
    assert db.count_events(T) == 2


# ---------------------------------------------------------------------- inbox


def test_store_events_and_read_them_back(db: GatewayDB) -> None:
    db.store_events([event(1), event(2), event(5), event(1, terminal="t-roof-02")])
    assert db.count_events() == 4
    assert db.count_events(T) == 3
    assert db.max_seq(T) == 5
    assert db.max_seq("t-nobody") == 0
    held = db.held_events({T: [1, 3, 5]})
    assert held == {(T, 1): (event(1)[3], b"body-1"), (T, 5): (event(5)[3], b"body-5")}
    assert db.stored_seqs(T, 2, 6) == [2, 5]
    assert db.seq_gaps() == [(T, 3, 4)]
    assert db.seq_gaps("t-roof-02") == []
    assert [seq for seq, _, _ in db.event_keys(T)] == [1, 2, 5]


def test_security_alerts_by_kind(db: GatewayDB) -> None:
    offered = (5, T, 3, "seq_conflict", b"a" * 32, b"b" * 32, b"body", "same seq")
    db.store_events([event(3)], [offered])
    db.record_security_alert(T, 4, "seq_gap", "seqs 4..4 missing", at_ns=6)
    assert db.security_alerts() == [(T, 3, "seq_conflict"), (T, 4, "seq_gap")]
    assert db.security_alerts("seq_gap") == [(T, 4, "seq_gap")]
    assert db.alert_keys("seq_gap") == {(T, 4)}


# ---------------------------------------------------------------------- the relay's walk


def test_claim_for_relay_mark_submitted_record_verdict(db: GatewayDB) -> None:
    db.store_events([event(1), event(2, flags=("selftest",)), event(3)])
    assert db.take_new_events(100, full=False) == 2 + 1
    assert db.take_new_events(101, full=False) == 0  # nothing new past the watermark
    assert db.registration_counts() == {"queued": 2, "selftest": 1}
    due = db.sendable(now_ns=100, limit=10)
    assert [(r["terminal"], r["seq"], r["badge"]) for r in due] == [
        (T, 1, "nfc-a:0A"),
        (T, 3, "nfc-a:0A"),
    ]
    with db.atomic():
        assert db.still_sendable([(T, 1), (T, 2), (T, 3)]) == {(T, 1), (T, 3)}
        db.set_registrations([((T, 1), {"state": "submitted", "attempts": 1})])
    assert db.still_sendable([(T, 1), (T, 3)]) == {(T, 3)}
    db.set_registrations([((T, 1), {"state": "pending", "ciao_id": "c-1", "remarks": ["late"]})])
    assert db.claimed_ciao_ids(["c-1", "c-2"]) == {"c-1"}
    row = db.registration(T, 1)
    assert (row["state"], row["attempts"], json.loads(row["remarks"])) == ("pending", 1, ["late"])
    db.set_registrations([((T, 1), {"state": "registered", "final_ns": 7})])
    assert [r["seq"] for r in db.unnotified_verdicts(10)] == [1]
    db.set_registrations([((T, 1), {"notified": 1})])
    assert db.unnotified_verdicts(10) == []
    assert db.count_notified() == 1


def test_a_crash_while_submitting_makes_the_rows_ambiguous(db: GatewayDB) -> None:
    db.store_events([event(1)])
    db.take_new_events(1, full=True)
    db.set_registrations([((T, 1), {"state": "submitted"})])
    assert db.recover_submitted(9) == 1
    row = db.registration(T, 1)
    assert (row["state"], row["next_try_ns"], row["updated_ns"]) == ("ambiguous", 0, 9)
    assert [r["seq"] for r in db.registrations_in(["ambiguous"], due_ns=9)] == [1]
    assert db.registrations_in(["ambiguous"], due_ns=-1) == []
    assert db.has_unreconciled() is False
    db.set_registrations([((T, 1), {"state": "needs_review"})])
    assert db.has_unreconciled() is True


def test_requeue_moves_only_rows_still_in_their_state_and_audits(db: GatewayDB) -> None:
    db.store_events([event(1), event(2)])
    db.take_new_events(1, full=True)
    db.set_registrations([((T, 1), {"state": "refused", "last_error": "bad"}),
                          ((T, 2), {"state": "registered"})])  # fmt: skip
    rows = db.select_registrations(terminal=T)
    moved = db.requeue_registrations(rows, {"refused": "queued"}, "--terminal t-hall-01", 50)
    assert moved == 1
    assert db.registration_counts() == {"queued": 1, "registered": 1}
    assert db.registration(T, 1)["requeued_ns"] == 50
    assert [a[1:5] for a in db.requeue_audit()] == [(T, 1, "refused", "queued")]
    # the same (now stale) selection again: the row is no longer refused, nothing moves
    assert db.requeue_registrations(rows, {"refused": "queued"}, "again", 60) == 0


def test_rows_waiting_for_the_registry_are_retried_on_a_new_version(db: GatewayDB) -> None:
    db.store_events([event(1), event(2)])
    db.take_new_events(1, full=True)
    db.set_registrations([((T, 1), {"state": "unknown_badge", "registry_version": 3})])
    waiting = ("unknown_badge", "blocked_badge", "unknown_workplace")
    assert db.retry_waiting_for_registry(waiting, 3) == 0
    assert db.retry_waiting_for_registry(waiting, 4) == 1
    assert db.registration_counts() == {"queued": 2}
    db.set_registrations([((T, 1), {"state": "pending", "created_ns": 0})])
    assert [r["seq"] for r in db.overdue(["queued", "pending"], 1, 10)] == [1]


def test_a_badge_enrolment_claim_wins_over_the_relay_but_not_after_it(db: GatewayDB) -> None:
    db.store_events([event(1, flags=("unknown_badge",), received_ns=500), event(2)])
    assert db.next_unknown_badge_tap(T, 400, '%"unknown_badge"%') == (1, "nfc-a:0A")
    assert db.next_unknown_badge_tap(T, 600, '%"unknown_badge"%') is None
    # before the relay took it: the claim creates the row
    assert db.claim_tap(T, 1, "enrolment", "enrolment tap", ("queued",), 9) == "enrolment"
    db.take_new_events(10, full=True)
    assert db.registration(T, 1)["state"] == "enrolment"  # the relay does not take it back
    db.set_registrations([((T, 2), {"state": "submitted"})])
    assert db.claim_tap(T, 2, "enrolment", "enrolment tap", ("queued",), 11) == "submitted"


def test_retry_after_instant_only_moves_later(db: GatewayDB) -> None:
    assert db.not_before_ns() == 0
    db.save_not_before(200)
    db.save_not_before(100)
    assert db.not_before_ns() == 200


def test_relay_alerts_open_once_and_clear(db: GatewayDB) -> None:
    assert db.raise_relay_alert("ciao_down", "unreachable", 1) is True
    assert db.raise_relay_alert("ciao_down", "still", 2) is False
    assert db.open_relay_alerts() == {"ciao_down": "unreachable"}
    assert db.clear_relay_alert("ciao_down", 3) == "unreachable"
    assert db.clear_relay_alert("ciao_down", 4) is None
    assert db.raise_relay_alert("ciao_down", "again", 5) is True
    assert db.relay_alert_counts() == {"ciao_down": 2}


# ---------------------------------------------------------------------- enrolment, registries


def test_an_enrolment_token_is_claimed_once(db: GatewayDB) -> None:
    db.add_token("h1", SITE, 1, 100, "employer", "note")
    assert db.token("h1") == ("h1", SITE, 1, 100, "employer", "note", None, None)
    assert db.claim_token("h1", "t-a", "kid-a", 5) is True
    assert db.claim_token("h1", "t-b", "kid-b", 6) is False
    assert db.token_claim("h1") == (SITE, 100, 5, "t-a", "kid-a")
    assert [t[0] for t in db.tokens()] == ["h1"]
    db.record_location_conflict(SITE, "t-a", 7, 50.1, 4.2, None)
    assert db.location_conflicts(SITE) == [("t-a", 7, 50.1, 4.2, None)]


def test_terminal_registry_keys_and_sync_points(db: GatewayDB) -> None:
    with db.atomic():
        db.add_terminal(T, SITE, "active", 1)
        db.add_terminal_key(T, "k1", "ed25519", b"\x01" * 32, 1)
    db.revoke_terminal_key(T, "k1", 9)
    db.set_terminal_status(T, "disabled")
    workplace, status, keys = db.terminal(T)
    assert (workplace, status, keys[0][0], keys[0][4]) == (SITE, "disabled", "k1", 9)
    db.record_heartbeat(T, '{"ok": 1}', 10, ("boot-A", 100, 50, 7))
    db.record_heartbeat(T, '{"ok": 2}', 11, ("boot-A", 90, 40, 7))  # an older reading
    assert db.sync_point(T, "boot-A") == (100, 50, 7, 10)
    assert db.last_heartbeat(T) == '{"ok": 2}'
    assert db.terminal_ids() == [T]
    assert db.terminal_places("disabled") == [(T, SITE)]
    assert db.terminal_places("active") == []
    assert db.terminal("t-nobody") is None


def test_a_terminals_key_count_grows_with_each_key_and_not_on_revocation(db: GatewayDB) -> None:
    # The intake rereads a terminal's keys when this count differs from its cached copy.
    assert db.terminal_key_count(T) == 0
    with db.atomic():
        db.add_terminal(T, SITE, "active", 1)
        db.add_terminal_key(T, "k1", "ed25519", b"\x01" * 32, 1)
    assert db.terminal_key_count(T) == 1
    db.add_terminal_key(T, "k2", "ed25519", b"\x02" * 32, 2)
    db.revoke_terminal_key(T, "k1", 3)
    assert db.terminal_key_count(T) == 2
    assert db.terminal_key_count("t-nobody") == 0


def test_every_registry_change_bumps_its_version(db: GatewayDB) -> None:
    start = db.registry_version()
    db.save_worker("w-1", "Ana", b"sealed", "0123456789", "enterprise", "employee")
    db.link_badge("nfc-a:0A", "w-1")
    db.save_workplace(SITE, 50.8, 4.3, None)
    db.assign_worker("w-1", SITE)
    assert db.registry_version() == start + 4
    assert db.worker_row_of_badge("nfc-a:0A")[:2] == ("w-1", "Ana")
    db.block_badge("nfc-a:0A")
    assert db.worker_row_of_badge("nfc-a:0A") is None
    assert db.badge_active("nfc-a:0A") is False
    assert db.badge_active("nfc-a:FF") is None
    assert db.roster_rows(SITE) == [("nfc-a:0A", "w-1", "Ana", 0)]


def test_sequence_decisions_first_one_wins(db: GatewayDB) -> None:
    first = (T, 1, SITE, "w-1", 100, "in", "in", "", 5)
    db.record_decisions([first])
    db.record_decisions([(T, 1, SITE, "w-1", 100, "in", "out", "late", 6)])
    assert db.decision((T, 1)) == (SITE, "w-1", 100, "in", "in", "")
    assert db.newest_decision(SITE, "w-1") == ("in", "in", 100)
    assert db.prior_decision(SITE, "w-1", 200, (T, 2)) == ("in", 100)
    assert db.decided_later(SITE, "w-1", 50, 6) is True
    assert db.sequence_issues() == []


def test_each_workers_newest_decision_within_the_window(db: GatewayDB) -> None:
    db.record_decisions([
        (T, 1, SITE, "w-1", 100, "in", "in", "", 5),
        (T, 2, SITE, "w-1", 300, "break_start", "out", "", 6),
        (T, 3, SITE, "w-2", 200, "in", "in", "", 7),
        (T, 4, SITE, "w-3", 10, "in", "in", "", 8),  # outside the window
        (T, 5, "1Y1003SQ5VSSX", "w-1", 900, "out", "out", "", 9),  # another workplace
    ])  # fmt: skip
    newest = sorted(tuple(row) for row in db.newest_decisions(SITE, 150))
    assert newest == [("w-1", "break_start", "out", 300), ("w-2", "in", "in", 200)]
    assert db.newest_decisions("1Y1003SQ5VSSY", 150) == []
