"""bench/rounds.py: compared figures are taken interleaved, over rounds, and reported with spread.

The bug it fixes: ``drain`` measured its raw QoS 1 reference once, apart from the drain, so a
machine that sped up or slowed down between the two moved the ratio (1.76 on one run, 0.98 on
the next, for the same code).
"""

from __future__ import annotations

import pytest

from bench import rounds


class DriftingMachine:
    """Every measurement on it takes the work times a slowness that grows with each call: a
    shared machine getting busier while a benchmark runs."""

    def __init__(self) -> None:
        self.calls = 0

    def measure(self, work: float) -> float:
        self.calls += 1
        return work * (1.0 + 0.05 * self.calls)


def test_the_order_alternates_round_by_round() -> None:
    order: list[str] = []
    rounds.interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 4)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_equal_work_compares_as_equal_on_a_drifting_machine() -> None:
    machine = DriftingMachine()
    got = rounds.interleaved(
        {"drain": lambda: machine.measure(1.0), "raw": lambda: machine.measure(1.0)}, 3
    )
    ratio = rounds.ratio_of_medians("ratio", got["drain"], got["raw"])["ratio"]
    assert ratio == pytest.approx(1.0, abs=0.05)

    # The old way, on the same drifting machine: the reference measured apart from the measure.
    machine = DriftingMachine()
    raw = [machine.measure(1.0) for _ in range(3)]
    drain = [machine.measure(1.0) for _ in range(3)]
    apart = rounds.median(drain) / rounds.median(raw)
    assert abs(apart - 1.0) > 0.1  # what the interleaving saves a reader from


def test_fewer_than_three_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 rounds"):
        rounds.interleaved({"a": lambda: 1.0}, 2)


def test_a_figure_keeps_its_name_for_the_median_and_reports_its_spread() -> None:
    figures = rounds.figure("raw_qos1_msgs_per_s", [2555.0, 4912.0, 3000.0], digits=0)
    assert figures == {
        "raw_qos1_msgs_per_s": 3000,
        "raw_qos1_msgs_per_s_spread": {"min": 2555, "max": 4912, "runs": [2555, 4912, 3000]},
    }


def test_the_ratio_is_of_the_medians_with_each_rounds_ratio_beside_it() -> None:
    ratio = rounds.ratio_of_medians("r", [10.0, 30.0, 20.0], [10.0, 10.0, 40.0])
    assert ratio == {"r": 2.0, "r_per_round": [1.0, 3.0, 0.5]}


def test_before_round_prepares_outside_the_measures() -> None:
    seen: list[str] = []
    rounds.interleaved(
        {"m": lambda: seen.append("m")}, 3, before_round=lambda n: seen.append(f"setup{n}")
    )
    assert seen == ["setup0", "m", "setup1", "m", "setup2", "m"]


def test_cards_arrive_at_every_phase_of_the_readers_poll() -> None:
    """card_to_feedback used to place every card 0.25 s after the last: one phase of the
    reader's 0.1 s poll, sampled sixty times."""
    from bench.bench_card_to_feedback import TAPS, pauses

    poll_s = 0.1
    tenths = {int((pause % poll_s) / poll_s * 10) for pause in pauses(TAPS)}
    assert len(tenths) >= 8, sorted(tenths)
    assert pauses(TAPS) == pauses(TAPS)  # seeded: a run can be repeated
