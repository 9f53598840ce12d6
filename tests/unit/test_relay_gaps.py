"""The rule that holds a terminal's events above a gap in its sequence (gateway.relay_gaps)."""

from __future__ import annotations

from siteclock.gateway.relay_gaps import TerminalOrder, predecessors

NOW = 1_000 * 10**9
HOLD, RECHECK = 60 * 10**9, 10**9


def row(terminal: str, seq: int, arrived_s_ago: float = 1.0) -> dict:
    return {"terminal": terminal, "seq": seq, "created_ns": NOW - int(arrived_s_ago * 1e9)}


def walk(rows, states, *, undated=()):
    """(keys that go on, {held key: columns}, the order) for rows in (terminal, seq) order;
    ``undated`` rows go on from the rule but are held by the caller for their clock."""
    order = TerminalOrder(states, now_ns=NOW, hold_ns=HOLD, recheck_ns=RECHECK)
    go, held = [], {}
    for r in rows:
        key = (r["terminal"], r["seq"])
        columns = order.hold(r)
        if columns is not None:
            held[key] = columns
        elif key in undated:
            order.waits(key)
        else:
            go.append(key)
    return go, held, order


def test_only_the_first_of_each_run_needs_its_predecessor_looked_up() -> None:
    rows = [row("a", 4), row("a", 5), row("a", 7), row("b", 1), row("b", 2)]
    assert predecessors(rows) == [("a", 3), ("a", 6)]


def test_a_run_after_a_stored_predecessor_goes_and_one_above_a_hole_waits() -> None:
    rows = [row("a", 4), row("a", 5), row("a", 7), row("a", 8), row("b", 1)]
    go, held, order = walk(rows, {("a", 3): "registered"})  # ("a", 6) is not at the gateway
    assert go == [("a", 4), ("a", 5), ("b", 1)]
    assert list(held) == [("a", 7), ("a", 8)]
    assert held[("a", 7)]["state"] == "awaiting_earlier"
    assert held[("a", 7)]["next_try_ns"] == NOW + RECHECK
    assert "seq 6" in held[("a", 7)]["last_error"]
    assert order.expired == []


def test_a_predecessor_that_waits_itself_is_as_good_as_missing() -> None:
    for state in ("awaiting_earlier", "awaiting_clock_sync"):
        go, held, _ = walk([row("a", 9)], {("a", 8): state})
        assert go == []
        assert list(held) == [("a", 9)]
    go, _, _ = walk([row("a", 9)], {("a", 8): "queued"})  # stored, not decided yet: fine
    assert go == [("a", 9)]


def test_the_successors_of_a_row_held_for_its_clock_wait_for_it() -> None:
    rows = [row("a", 1), row("a", 2), row("a", 3), row("b", 1)]
    go, held, _ = walk(rows, {}, undated={("a", 1)})
    assert go == [("b", 1)]
    assert list(held) == [("a", 2), ("a", 3)]


def test_the_hold_ends_at_the_grace_time_counted_from_arrival() -> None:
    _, held, _ = walk([row("a", 2, arrived_s_ago=59.5)], {})
    assert held[("a", 2)]["next_try_ns"] == NOW + HOLD - int(59.5e9)
    go, held, order = walk([row("a", 2, arrived_s_ago=61), row("a", 3, arrived_s_ago=1)], {})
    assert go == [("a", 2), ("a", 3)]  # its successor goes with it
    assert order.expired == [("a", 2)]
