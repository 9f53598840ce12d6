"""Relay stage 3 alone: the decisions of reconciliation (which registration CIaO holds is whose,
which search parameters to drop, what a refused search does to its rows)."""

from __future__ import annotations

import json

from siteclock.gateway.ciao.client import Permanent, Registration
from siteclock.gateway.relay_reconcile import (
    adopted_columns,
    match_registrations,
    parameters_to_drop,
    search_refused_updates,
)
from siteclock.gateway.relay_store import State

S = 1_000_000_000
HOUR = 3600.0


def row(seq: int, date: str, kind: str = "in", refused_since: int | None = None) -> dict:
    return {
        "terminal": "t-1",
        "seq": seq,
        "reg_date": date,
        "ciao_type": kind,
        "search_refused_ns": refused_since,
    }


def hit(ident: str, date: str, kind: str = "IN", validity: str = "VALID") -> Registration:
    return Registration(ident, validity, registration_date=date, type=kind)


def test_a_row_adopts_the_registration_of_its_type_at_its_instant() -> None:
    rows = [row(1, "2026-03-02T07:00:00Z"), row(2, "2026-03-02T16:00:00Z", "out")]
    hits = [
        hit("c-out", "2026-03-02T17:00:00+01:00", "OUT"),  # the same instant, another offset
        hit("c-in", "2026-03-02T07:00:00Z"),
    ]
    matched, missing = match_registrations(rows, hits, set())
    assert [(r["seq"], h.id) for r, h in matched] == [(1, "c-in"), (2, "c-out")]
    assert missing == []


def test_a_registration_is_adopted_once_and_never_one_already_taken() -> None:
    twins = [row(1, "2026-03-02T07:00:00Z"), row(2, "2026-03-02T07:00:00Z")]
    taken = {"c-old"}
    hits = [hit("c-old", "2026-03-02T07:00:00Z"), hit("c-new", "2026-03-02T07:00:00Z")]
    matched, missing = match_registrations(twins, hits, taken)
    assert [(r["seq"], h.id) for r, h in matched] == [(1, "c-new")]
    assert [r["seq"] for r in missing] == [2]  # not found: it goes again
    assert taken == {"c-old", "c-new"}


def test_another_type_or_instant_is_not_a_match() -> None:
    rows = [row(1, "2026-03-02T07:00:00Z", "in")]
    hits = [hit("a", "2026-03-02T07:00:00Z", "OUT"), hit("b", "2026-03-02T07:00:01Z", "IN")]
    assert match_registrations(rows, hits, set()) == ([], rows)


def test_adopting_takes_the_registration_over_and_ends_a_final_one() -> None:
    registration = Registration("c-1", "VALID", ("late",))
    final = adopted_columns(registration, State.REGISTERED, 5 * S)
    assert final["ciao_id"] == "c-1"
    assert final["final_ns"] == 5 * S
    assert final["search_refused_ns"] is None
    assert adopted_columns(registration, State.PENDING, 5 * S)["final_ns"] is None


def test_only_droppable_query_parameters_are_dropped() -> None:
    droppable = {"ssin", "dateFrom"}

    def refused(status: int, *names: tuple[str, str]) -> Permanent:
        issues = [{"in": where, "name": name} for where, name in names]
        return Permanent("no", reason="bad", status=status, issues=issues)

    assert parameters_to_drop(refused(400, ("query", "ssin")), droppable, set()) == {"ssin"}
    # already left out: nothing more to drop, the refusal stands
    assert parameters_to_drop(refused(400, ("query", "ssin")), droppable, {"ssin"}) == set()
    # not ours to drop, not in the query, or not a 400
    assert parameters_to_drop(refused(400, ("query", "employer")), droppable, set()) == set()
    assert parameters_to_drop(refused(400, ("body", "ssin")), droppable, set()) == set()
    assert parameters_to_drop(refused(403, ("query", "ssin")), droppable, set()) == set()


def test_a_refused_search_keeps_rows_waiting_then_hands_them_to_a_person() -> None:
    exc = Permanent("no", reason="http_400", status=400, problem={"title": "bad search"})
    now = 10 * HOUR * S
    fresh = row(1, "2026-03-02T07:00:00Z")
    old = row(2, "2026-03-02T08:00:00Z", refused_since=now - int(HOUR * S))
    updates, reviewed = search_refused_updates(
        [fresh, old], exc, now, review_after_s=HOUR, retry_ns=now + 60 * S
    )
    assert reviewed == 1
    waiting, person = (values for _, values in updates)
    assert waiting["search_refused_ns"] == now
    assert waiting["next_try_ns"] == now + 60 * S
    assert "state" not in waiting  # still ambiguous: never resubmitted blind
    assert person["state"] == State.NEEDS_REVIEW
    assert person["search_refused_ns"] == now - int(HOUR * S)  # since when, kept
    assert json.loads(person["problem"])["title"] == "bad search"
