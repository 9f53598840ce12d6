"""The reads of the terminals page, the sweeper, the metrics and the security alerts on every
backend: silent terminals, the page filtered by workplace, state and search (a site manager
with no workplace sees nothing), its summary, refusals per terminal and in total, security
alerts resolved, and the relay's latencies."""

from __future__ import annotations

from siteclock.gateway.db import GatewayDB
from tests.contract.test_gateway_db import SITE, T, event
from tests.contract.test_health_ops import FIGURES

OTHER_SITE = "1Y1003SQ5VSSX"
ROOF = "t-roof-02"
SHED = "t-shed-03"


def _three_terminals(db: GatewayDB) -> None:
    """T online (due at 40), ROOF offline, SHED never heard from, a retired one ignored."""
    db.add_terminal(T, SITE, "active", 1)
    db.add_terminal(ROOF, OTHER_SITE, "active", 1)
    db.add_terminal(SHED, SITE, "active", 1)
    db.add_terminal("t-old-09", SITE, "retired", 1)
    db.save_terminal_online(T, 10, 40, FIGURES)
    db.save_terminal_online(ROOF, 10, 30, FIGURES)
    db.save_terminal_offline(ROOF, 20, "connection lost")


def test_silent_terminals_are_the_online_ones_past_their_deadline(db: GatewayDB) -> None:
    _three_terminals(db)
    db.add_terminal("t-gate-04", SITE, "active", 1)
    db.save_terminal_online("t-gate-04", 10, 35, {**FIGURES, "heartbeat_s": 15.0})
    assert db.silent_terminals(now_ns=30) == []
    assert db.silent_terminals(now_ns=41) == [("t-gate-04", 15.0), (T, 30.0)]
    assert db.silent_terminals(now_ns=41, limit=1) == [("t-gate-04", 15.0)]


def test_the_terminals_page_filtered_and_summed(db: GatewayDB) -> None:
    _three_terminals(db)
    page = db.terminals_page()
    assert [(r["terminal"], r["online"]) for r in page] == [(ROOF, 0), (SHED, None), (T, 1)]
    assert page[0]["reason"] == "connection lost"
    assert page[2]["queue_depth"] == 2
    assert [r["terminal"] for r in db.terminals_page(workplaces=[SITE])] == [SHED, T]
    assert db.terminals_page(workplaces=[]) == []  # a site manager given no worksite
    assert [r["terminal"] for r in db.terminals_page(state="online")] == [T]
    assert [r["terminal"] for r in db.terminals_page(state="offline")] == [ROOF]
    assert [r["terminal"] for r in db.terminals_page(state="never")] == [SHED]
    assert [r["terminal"] for r in db.terminals_page(search="ROOF")] == [ROOF]  # any case
    assert [r["terminal"] for r in db.terminals_page(search="vssx")] == [ROOF]
    assert [r["terminal"] for r in db.terminals_page(offset=1, limit=1)] == [SHED]
    assert [r["terminal"] for r in db.active_terminal_health()] == [T, ROOF, SHED]

    assert db.terminals_summary() == {"online": 1, "offline": 1, "never": 1}
    assert db.terminals_summary(workplaces=[SITE]) == {"online": 1, "offline": 0, "never": 1}
    assert db.terminals_summary(workplaces=[]) == {"online": 0, "offline": 0, "never": 0}
    assert db.terminals_summary(search="shed") == {"online": 0, "offline": 0, "never": 1}


def test_refusals_add_up_per_terminal_and_reason(db: GatewayDB) -> None:
    db.add_refusals({(T, "bad_signature"): 2, (T, "too_old"): 1}, 10)
    db.add_refusals({(T, "bad_signature"): 3, (ROOF, "bad_signature"): 1}, 20)
    assert db.terminal_refusals([T, ROOF, SHED]) == {
        T: {"bad_signature": 5, "too_old": 1},
        ROOF: {"bad_signature": 1},
    }
    assert db.terminal_refusals([]) == {}
    assert db.refusal_totals() == {"bad_signature": 6, "too_old": 1}


def test_security_alerts_resolved_once(db: GatewayDB) -> None:
    db.record_security_alert(T, 3, "seq_gap", "seqs 3..3 missing", at_ns=5)
    db.record_security_alert(ROOF, 9, "seq_conflict", "same seq, other body", at_ns=6)
    first, second = db.open_security_alerts()
    assert (first["terminal"], first["seq"], first["kind"], first["at_ns"]) == (T, 3, "seq_gap", 5)
    assert first["detail"] == "seqs 3..3 missing"
    assert [r["id"] for r in db.open_security_alerts(after_id=first["id"])] == [second["id"]]
    assert db.resolve_security_alert(first["id"], "terminal replaced", "boss", 50) is True
    assert db.resolve_security_alert(first["id"], "again", "boss", 60) is False
    assert [r["kind"] for r in db.open_security_alerts()] == ["seq_conflict"]
    assert db.open_security_alerts(limit=0) == []


def test_the_relays_latencies_since_a_moment(db: GatewayDB) -> None:
    db.store_events([event(seq) for seq in range(1, 4)])
    db.take_new_events(1, full=True)
    db.set_registrations([
        ((T, 1), {"created_ns": 1_000_000_000, "submitted_ns": 3_500_000_000}),
        ((T, 2), {"created_ns": 2_000_000_000, "submitted_ns": 2_250_000_000}),
    ])  # fmt: skip
    assert db.relay_latencies_since(0) == [(2_250_000_000, 0.25), (3_500_000_000, 2.5)]
    assert db.relay_latencies_since(2_250_000_000) == [(3_500_000_000, 2.5)]
    assert db.relay_latencies_since(0, limit=1) == [(2_250_000_000, 0.25)]


def test_only_terminals_with_something_to_show_need_attention(db: GatewayDB) -> None:
    """What the alert rules read each round: the rows with a condition, nothing else."""
    _three_terminals(db)  # T healthy, ROOF offline, SHED never heard from
    sick = {
        "t-late-05": {"oldest_unsent_age_s": 900.0},
        "t-ntp-06": {"clock_synced": 0, "clock_maxerror_us": 16_000_000},
        "t-nfc-07": {"reader": "unplugged"},
        "t-card-08": {"disk_free_mb": 12.0},
        "t-full-09": {"alerts": "disk_full"},
        "t-fine-10": {"oldest_unsent_age_s": 30.0, "clock_synced": 1, "disk_free_mb": 900.0},
    }
    for terminal, figures in sick.items():
        db.add_terminal(terminal, SITE, "active", 1)
        db.save_terminal_online(terminal, 10, 40, {**FIGURES, **figures})
    found = db.terminals_needing_attention(backlog_age_s=600.0, disk_low_mb=100.0)
    assert [r["terminal"] for r in found] == sorted([ROOF, *sick][:-1])
    assert {r["terminal"]: r["online"] for r in found}[ROOF] == 0
    assert [r["terminal"] for r in db.terminals_needing_attention(1000.0, 10.0)] == sorted(
        [ROOF, "t-ntp-06", "t-nfc-07", "t-full-09"]
    )
