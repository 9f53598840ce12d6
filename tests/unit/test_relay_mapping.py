"""Relay stage 1 alone: mapping a stored event to a CIaO item, and dating an unsynced tap."""

from __future__ import annotations

import pytest

from siteclock.gateway.identifiers import inss_check_digits
from siteclock.gateway.registry import Employer, EmployerKind, Inss, Resolved, Workplace
from siteclock.gateway.relay_mapping import (
    BADGE_BLOCKED,
    BADGE_UNKNOWN,
    BODY_UNREADABLE,
    NEVER_SYNCED,
    WAITING_FOR_SYNC,
    WORKPLACE_UNKNOWN,
    ciao_item,
    corrected_wall_ns,
    employer_json,
    instant,
    item_problem,
    place_json,
    registration_date,
    terminal_time,
    unreadable_body,
    unresolved,
    unsynced_tap,
)
from siteclock.gateway.relay_store import State

S = 1_000_000_000
FIRST9 = "850101001"
INSS = FIRST9 + inss_check_digits(FIRST9)


def worker(
    kind: EmployerKind = EmployerKind.ENTERPRISE, employer_id: str = "0123456749"
) -> Resolved:
    return Resolved("w-17", "An P.", Inss(INSS), Employer(employer_id, kind), "worker")


def test_registration_date_is_utc_with_z_in_the_profiles_precision() -> None:
    moment = 1_700_000_000 * S + 123_456_789
    assert registration_date(moment) == "2023-11-14T22:13:20Z"
    assert registration_date(moment, "milliseconds") == "2023-11-14T22:13:20.123Z"


def test_corrected_time_keeps_the_boot_clock_distance_to_the_sync_point() -> None:
    # synced 90 s after the tap on the boot clock, at 10:00:00 true time
    assert corrected_wall_ns(10 * S, 1_000 * S, 100 * S) == 910 * S


def test_an_item_carries_the_worker_the_place_and_the_relationship() -> None:
    place = Workplace("DOW-1", latitude=50.85, longitude=4.35)
    employer = employer_json(worker())
    item = ciao_item(worker(), place, employer, "2023-11-14T22:13:20Z", "in")
    assert item == {
        "registrationDate": "2023-11-14T22:13:20Z",
        "ssin": INSS,
        "type": "in",
        "employer": {"enterpriseNumber": "0123456749"},
        "placeOfWork": {"coordinates": {"latitude": 50.85, "longitude": 4.35}},
        "contractualRelationshipReference": "DOW-1",
    }


def test_a_foreign_employer_and_a_place_without_coordinates() -> None:
    assert employer_json(worker(EmployerKind.FOREIGN_VAT, "NL123456789B01")) == {
        "foreignVatNumber": "NL123456789B01"
    }
    address = {"street": "Rue Haute 1", "postalCode": "1000"}
    assert place_json(Workplace("DOW-2", latitude=50.0, address=address)) == {"address": address}
    assert place_json(Workplace("DOW-3")) == {"address": {}}


def test_item_problem_keeps_the_items_own_issues_and_the_general_ones() -> None:
    problem = {
        "status": 400,
        "issues": [
            {"name": "items[1].ssin", "detail": "unknown"},
            {"name": "items[10].type", "detail": "bad"},
            {"name": "items[0].type", "detail": "other item"},
            {"name": "header", "detail": "general"},
        ],
    }
    mine = item_problem(problem, 1)
    assert mine["issues"] == [
        {"name": "item.ssin", "detail": "unknown"},
        {"name": "header", "detail": "general"},
    ]
    assert mine["status"] == 400
    assert problem["issues"][0]["name"] == "items[1].ssin"  # the batch's problem is untouched


@pytest.mark.parametrize(
    ("worker_known", "blocked", "expected"),
    [
        (True, False, (State.UNKNOWN_WORKPLACE, WORKPLACE_UNKNOWN)),
        (False, True, (State.BLOCKED_BADGE, BADGE_BLOCKED)),
        (False, False, (State.UNKNOWN_BADGE, BADGE_UNKNOWN)),
    ],
)
def test_each_registry_gap_has_its_own_state(
    worker_known: bool, blocked: bool, expected: tuple[State, str]
) -> None:
    assert unresolved(worker_known, blocked) == expected


def test_instant_compares_offsets_and_refuses_naive_times() -> None:
    assert instant("2023-11-14T22:13:20Z") == instant("2023-11-14T23:13:20+01:00")
    assert instant("2023-11-14T22:13:20") is None
    assert instant("garbage") is None


# ---------------------------------------------------------------------- clock correction

HOLD = dict(hold_s=600.0, recheck_s=10.0)


def test_a_synced_tap_keeps_its_terminal_time_and_records_nothing() -> None:
    decision = terminal_time(5 * S)
    assert (decision.wall_ns, decision.columns, decision.counter) == (5 * S, {}, None)


def test_an_unsynced_tap_is_dated_from_the_sync_point_of_its_boot() -> None:
    decision = unsynced_tap(
        terminal_ns=20 * S, event_boot_ns=10 * S, sync=(1_000 * S, 100 * S),
        created_ns=0, now_ns=1 * S, **HOLD,
    )  # fmt: skip
    assert decision.wall_ns == 910 * S
    assert decision.counter == "clock_corrected"
    assert decision.columns["terminal_wall_ns"] == 20 * S
    assert decision.columns["corrected_wall_ns"] == 910 * S
    assert decision.columns["clock_note"] == (
        "corrected by +890.000 s from a clock sync in the same boot"
    )


def test_without_a_sync_point_the_tap_is_held_and_looked_at_again() -> None:
    decision = unsynced_tap(
        terminal_ns=20 * S, event_boot_ns=10 * S, sync=None,
        created_ns=100 * S, now_ns=200 * S, **HOLD,
    )  # fmt: skip
    assert decision.wall_ns is None
    assert decision.counter is None
    assert decision.columns == {
        "state": State.AWAITING_CLOCK_SYNC,
        "next_try_ns": 210 * S,
        "last_error": WAITING_FOR_SYNC,
        "updated_ns": 200 * S,
    }


def test_the_last_recheck_falls_on_the_end_of_the_hold() -> None:
    decision = unsynced_tap(
        terminal_ns=20 * S, event_boot_ns=10 * S, sync=None,
        created_ns=100 * S, now_ns=695 * S, **HOLD,
    )  # fmt: skip
    assert decision.columns["next_try_ns"] == 700 * S


def test_after_the_hold_the_tap_goes_with_terminal_time_and_a_note() -> None:
    decision = unsynced_tap(
        terminal_ns=20 * S, event_boot_ns=10 * S, sync=None,
        created_ns=100 * S, now_ns=700 * S, **HOLD,
    )  # fmt: skip
    assert decision.wall_ns == 20 * S
    assert decision.counter == "clock_never_synced"
    assert decision.columns == {
        "terminal_wall_ns": 20 * S,
        "corrected_wall_ns": None,
        "clock_note": NEVER_SYNCED,
    }


def test_a_nonsense_sync_point_is_no_sync_point() -> None:
    # the boot clock says the tap was long before the epoch: held, not dated from it
    decision = unsynced_tap(
        terminal_ns=20 * S, event_boot_ns=0, sync=(1 * S, 100 * S),
        created_ns=100 * S, now_ns=200 * S, **HOLD,
    )  # fmt: skip
    assert decision.wall_ns is None


def test_an_unreadable_body_uses_terminal_time_with_a_note() -> None:
    decision = unreadable_body(20 * S)
    assert decision.wall_ns == 20 * S
    assert decision.counter == "clock_body_unreadable"
    assert decision.columns == {"terminal_wall_ns": 20 * S, "clock_note": BODY_UNREADABLE}
