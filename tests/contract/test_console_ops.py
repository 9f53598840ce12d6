"""The console's operations keep the same contract on every backend (SQLite, PostgreSQL):
accounts and their worksites, sessions, the audit trail's order, resolutions, and the
registrations page (scope, filters, keyset cursor, both read paths of a selective filter)."""

from __future__ import annotations

import json

import pytest

from siteclock.gateway.db import GatewayDB, console_ops
from siteclock.gateway.db.console_ops import RegistrationFilter
from siteclock.gateway.db.errors import IntegrityError
from tests.contract.test_gateway_db import SITE, event

OTHER = "2Y1003SQ5VSSZ"
EMPLOYER = json.dumps({"enterpriseNumber": "0200000142"})


def _stored(db: GatewayDB) -> None:
    """Five taps on SITE (seq 1-5) and two on OTHER, one second apart, as registrations."""
    rows = [event(seq, wall_ns=seq * 10**9) for seq in range(1, 6)]
    rows += [(*event(seq, terminal="t-other", wall_ns=seq * 10**9 + 1)[:8], OTHER,
              *event(seq)[9:]) for seq in (1, 2)]  # fmt: skip
    db.store_events(rows)
    db.take_new_events(10, full=True)
    db.set_registrations([
        (("t-hall-01", 2), {"state": "rejected", "employer": EMPLOYER, "worker_ref": "w-1"}),
        (("t-other", 1), {"state": "rejected"}),
    ])  # fmt: skip


def test_accounts_keep_their_role_worksites_and_state(db: GatewayDB) -> None:
    db.add_console_user("an", "hash-1", "site_manager", [SITE, OTHER], "fr", 5)
    assert db.console_user("an") == ("an", "hash-1", "site_manager", "fr", 0, [SITE, OTHER])
    with pytest.raises(IntegrityError):
        db.add_console_user("an", "hash-2", "admin", [], "nl", 6)
    db.open_console_session("tok", "an", "csrf", 7)
    assert db.set_console_user("an", worksites=[SITE], disabled=True)
    assert db.console_user("an")[4:] == (1, [SITE])
    assert db.console_session("tok") is None  # other worksites end the sessions
    assert [u[0] for u in db.console_users()] == ["an"]
    assert db.remove_console_user("an")
    assert not db.set_console_user("an", role="admin")


def test_sessions_are_touched_closed_and_expired(db: GatewayDB) -> None:
    db.add_console_user("an", "h", "admin", [], "nl", 1)
    db.open_console_session("a", "an", "c1", 10)
    db.open_console_session("b", "an", "c2", 10)
    db.touch_console_session("b", 50)
    assert db.console_session("b") == ("an", "c2", 10, 50)
    assert db.expire_console_sessions(20) == 1
    db.close_console_session("b")
    assert db.console_session("a") is None
    assert db.console_session("b") is None


def test_the_audit_trail_reads_newest_first_a_page_at_a_time(db: GatewayDB) -> None:
    for i in range(5):
        db.add_console_audit(i, "an", f"action-{i}", "{}", "10.0.0.1")
    first = db.console_audit(limit=2)
    assert [r[3] for r in first] == ["action-4", "action-3"]
    assert [r[3] for r in db.console_audit(limit=2, before_id=first[-1][0])] == [
        "action-2", "action-1"]  # fmt: skip


@pytest.mark.parametrize("sort_at_most", [0, 20_000])
def test_registrations_pages_keep_scope_filters_and_order(
    db: GatewayDB, monkeypatch: pytest.MonkeyPatch, sort_at_most: int
) -> None:
    monkeypatch.setattr(console_ops, "SORT_AT_MOST", sort_at_most)
    _stored(db)

    def ids(**wanted: object) -> list[str]:
        rows = db.registrations_page(RegistrationFilter(**wanted), 10)  # type: ignore[arg-type]
        return [f"{r['terminal']}:{r['seq']}" for r in rows]

    assert ids()[:3] == ["t-hall-01:5", "t-hall-01:4", "t-hall-01:3"]
    assert len(ids()) == 7
    assert ids(scope=[OTHER]) == ["t-other:2", "t-other:1"]
    assert ids(scope=[OTHER], workplace=SITE) == []
    assert ids(state="rejected") == ["t-hall-01:2", "t-other:1"]
    assert ids(scope=[SITE], state="rejected") == ["t-hall-01:2"]
    assert ids(employer=[EMPLOYER]) == ["t-hall-01:2"]
    assert ids(worker="w-1") == ["t-hall-01:2"]
    assert ids(worker="nfc-a:0A", scope=[OTHER]) == ["t-other:2", "t-other:1"]
    assert ids(since_ns=2 * 10**9, until_ns=4 * 10**9) == [
        "t-hall-01:3", "t-other:2", "t-hall-01:2"]  # fmt: skip
    page = db.registrations_page(RegistrationFilter(scope=[SITE, OTHER]), 3)
    last = page[-1]
    rest = ids(scope=[SITE, OTHER], before=(last["wall_ns"], last["terminal"], last["seq"]))
    assert [f"{r['terminal']}:{r['seq']}" for r in page] + rest == ids(scope=[SITE, OTHER])


def test_a_resolution_is_kept_with_its_registration(db: GatewayDB) -> None:
    _stored(db)
    assert db.resolve_registration("t-hall-01", 2, "an", "Dimona fixed", 99)
    assert not db.resolve_registration("t-hall-01", 42, "an", "none such", 99)
    row = db.registration_detail("t-hall-01", 2)
    assert (row["resolution"], row["resolved_by"], row["resolved_ns"]) == ("Dimona fixed", "an", 99)
    assert db.registration_detail("t-hall-01", 42) is None
    db.save_workplace(SITE, 50.8, 4.3, None)
    assert db.known_workplaces() == [SITE]
