"""The rule that holds a terminal's events above a gap in its sequence (gateway.relay_gaps)."""

from __future__ import annotations

from siteclock.gateway.relay_gaps import hold_above_gaps, predecessors

NOW = 1_000 * 10**9
HOLD, RECHECK = 60 * 10**9, 10**9


def row(terminal: str, seq: int, arrived_s_ago: float = 1.0) -> dict:
    return {"terminal": terminal, "seq": seq, "created_ns": NOW - int(arrived_s_ago * 1e9)}


def keys(rows) -> list[tuple[str, int]]:
    return [(r["terminal"], r["seq"]) for r in rows]


def split(rows, states):
    return hold_above_gaps(rows, states, now_ns=NOW, hold_ns=HOLD, recheck_ns=RECHECK)


def test_only_the_first_of_each_run_needs_its_predecessor_looked_up() -> None:
    rows = [row("a", 4), row("a", 5), row("a", 7), row("b", 1), row("b", 2)]
    assert predecessors(rows) == [("a", 3), ("a", 6)]


def test_a_run_after_a_stored_predecessor_goes_and_one_above_a_hole_waits() -> None:
    rows = [row("a", 4), row("a", 5), row("a", 7), row("a", 8), row("b", 1)]
    found = split(rows, {("a", 3): "registered"})  # ("a", 6) is not at the gateway
    assert keys(found.release) == [("a", 4), ("a", 5), ("b", 1)]
    assert [k for k, _ in found.hold] == [("a", 7), ("a", 8)]
    columns = dict(found.hold)[("a", 7)]
    assert columns["state"] == "awaiting_earlier"
    assert columns["next_try_ns"] == NOW + RECHECK
    assert "seq 6" in columns["last_error"]
    assert found.expired == []


def test_a_predecessor_that_waits_itself_is_as_good_as_missing() -> None:
    found = split([row("a", 9)], {("a", 8): "awaiting_earlier"})
    assert found.release == []
    assert [k for k, _ in found.hold] == [("a", 9)]
    found = split([row("a", 9)], {("a", 8): "queued"})  # stored, not decided yet: fine
    assert keys(found.release) == [("a", 9)]


def test_the_hold_ends_at_the_grace_time_counted_from_arrival() -> None:
    found = split([row("a", 2, arrived_s_ago=59.5)], {})
    assert dict(found.hold)[("a", 2)]["next_try_ns"] == NOW + HOLD - int(59.5e9)
    found = split([row("a", 2, arrived_s_ago=61), row("a", 3, arrived_s_ago=1)], {})
    assert keys(found.release) == [("a", 2), ("a", 3)]  # its successor goes with it
    assert found.expired == [("a", 2)]


def test_the_batch_order_is_kept_for_what_goes_on() -> None:
    rows = [row("b", 1), row("a", 1), row("a", 2)]
    assert keys(split(rows, {}).release) == [("b", 1), ("a", 1), ("a", 2)]
