"""Direction of a tap: the worker's last attendance tap, the shift rule, fixed readers, guesses."""

from __future__ import annotations

import datetime as dt

import pytest

from siteclock.protocol import DayEntry, Flag, Kind
from siteclock.shift import NS_PER_HOUR, ShiftRule
from siteclock.terminal.direction import (
    Decision,
    Direction,
    LastTap,
    WorkerStates,
    decide,
    state_key,
)

H = NS_PER_HOUR
NOON = int(dt.datetime(2026, 11, 20, 12, 0).timestamp()) * 10**9  # local time


def test_an_in_more_than_a_shift_ago_starts_a_new_shift_and_flags_the_missing_out() -> None:
    forgot = LastTap(Kind.IN, NOON - 15 * H)
    assert decide(forgot, now_ns=NOON) == Decision(Kind.IN, (Flag.MISSING_OUT,))
    on_break = LastTap(Kind.BREAK_START, NOON - 15 * H)  # left during a break, never came back
    assert decide(on_break, now_ns=NOON).flags == (Flag.MISSING_OUT,)
    # arriving inside a break window (or with the key held) still starts the shift with `in`
    assert decide(forgot, now_ns=NOON, break_wanted=True).kind is Kind.IN
    # within the gap it is the same shift: the worker goes out
    assert decide(LastTap(Kind.IN, NOON - 13 * H), now_ns=NOON).kind is Kind.OUT
    # an `out` long ago is simply a new day: nothing is missing
    assert decide(LastTap(Kind.OUT, NOON - 20 * H), now_ns=NOON).flags == ()


def test_the_calendar_day_rule_also_ends_a_shift_at_midnight() -> None:
    evening = LastTap(Kind.IN, NOON - 13 * H)  # 23:00 the day before, local time
    rule = ShiftRule(gap_h=14.0, calendar_day=True)
    assert decide(evening, now_ns=NOON, rule=rule).kind is Kind.IN
    assert decide(evening, now_ns=NOON, rule=ShiftRule()).kind is Kind.OUT
    assert decide(LastTap(Kind.IN, NOON - 3 * H), now_ns=NOON, rule=rule).kind is Kind.OUT


@pytest.mark.parametrize(
    ("direction", "last", "kind", "odd"),
    [
        (Direction.IN, None, Kind.IN, False),
        (Direction.IN, Kind.OUT, Kind.IN, False),
        (Direction.IN, Kind.IN, Kind.IN, True),  # two `in` in a row: the reader is believed
        (Direction.IN, Kind.BREAK_START, Kind.BREAK_END, False),
        (Direction.OUT, Kind.IN, Kind.OUT, False),
        (Direction.OUT, Kind.BREAK_START, Kind.OUT, False),
        (Direction.OUT, None, Kind.OUT, True),  # an `out` with no `in`
        (Direction.OUT, Kind.OUT, Kind.OUT, True),
    ],
)
def test_a_fixed_reader_records_its_direction_and_flags_what_does_not_fit(
    direction, last, kind, odd
) -> None:
    decision = decide(LastTap(last, NOON - H) if last else None, now_ns=NOON, direction=direction,
                      guess=True)  # fmt: skip
    assert decision.kind is kind
    assert Flag.FIXED_DIRECTION in decision.flags
    assert (Flag.ODD_SEQUENCE in decision.flags) is odd
    assert Flag.DIRECTION_GUESS not in decision.flags  # a fixed reader never guesses


def test_only_an_inferred_tap_without_the_site_view_is_a_guess() -> None:
    assert decide(None, now_ns=NOON, guess=True).flags == (Flag.DIRECTION_GUESS,)
    assert decide(None, now_ns=NOON, guess=False).flags == ()


def test_the_newer_of_own_and_site_knowledge_wins() -> None:
    states = WorkerStates({"w-1": (Kind.IN, NOON - 4 * H), "w-2": (Kind.IN, NOON - H)})
    states.apply_site([
        DayEntry("w-1", Kind.OUT, NOON - 2 * H),
        DayEntry("w-2", Kind.OUT, NOON - 3 * H),
        DayEntry("w-3", Kind.BREAK_START, NOON),
    ])  # fmt: skip
    assert states.last("w-1") == LastTap(Kind.OUT, NOON - 2 * H)  # another terminal, later
    assert states.last("w-2") == LastTap(Kind.IN, NOON - H)  # this terminal knows better
    assert states.last("w-3") == LastTap(Kind.BREAK_START, NOON)
    states.record("w-3", Kind.BREAK_END, NOON + H)
    assert states.last("w-3") == LastTap(Kind.BREAK_END, NOON + H)
    states.apply_site([])  # a new roster replaces the site view whole
    assert states.last("w-1") == LastTap(Kind.IN, NOON - 4 * H)


def test_an_unknown_badge_has_its_own_state_never_a_workers() -> None:
    assert state_key("w-1", "nfc-a:0A") == "w-1"
    assert state_key(None, "nfc-a:0A") == "badge:nfc-a:0A"
