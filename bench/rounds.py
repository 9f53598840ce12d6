"""Figures you can compare: a measure and its reference, interleaved over several rounds.

A machine shared with other work drifts by a factor of two between runs (a raw QoS 1 rate once
read 2,555 msg/s and 4,912 msg/s on two runs of the same code), so a figure set against a
reference measured in another run - or even minutes apart in the same run - says more about
the machine than about the code. Every benchmark that compares therefore runs each measure
once per round, in an order that alternates from round to round (A B, B A, A B, ...), so both
see the same machine on average; and it reports, for each, the median over the rounds with its
spread (min, max and every round's value), and the ratio of the medians.

This is the one place that logic lives; each benchmark supplies only its measures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

ROUNDS = 3
"""The fewest rounds a compared figure may rest on (a median of two is an average)."""

T = TypeVar("T")


def interleaved(
    measures: Mapping[str, Callable[[], T]],
    rounds: int = ROUNDS,
    *,
    before_round: Callable[[int], object] | None = None,
) -> dict[str, list[T]]:
    """Run every measure once per round, reversing the order every other round.

    ``before_round(round_no)``, if given, prepares what the round's measures share (a fresh
    backlog, say) outside any measure's clock. Returns each measure's results by name, in
    round order.
    """
    if rounds < ROUNDS:
        raise ValueError(f"a compared figure needs at least {ROUNDS} rounds, not {rounds}")
    names = list(measures)
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_no in range(rounds):
        if before_round is not None:
            before_round(round_no)
        for name in names if round_no % 2 == 0 else reversed(names):
            results[name].append(measures[name]())
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """What a reader needs to judge a median: the extremes and every round's value."""
    return {
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def figure(name: str, values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """``{name: median, name_spread: {...}}`` - the median keeps the figure's old name."""
    value = round(median(values), digits)
    return {name: int(value) if digits == 0 else value, f"{name}_spread": spread(values, digits)}


def ratio_of_medians(
    name: str, measured: Sequence[float], reference: Sequence[float], digits: int = 2
) -> dict[str, Any]:
    """``{name: median(measured) / median(reference), name_per_round: [...]}``.

    The per-round ratios (measure and reference taken side by side) show how far one round's
    comparison strays from the median one.
    """
    per_round = [m / r for m, r in zip(measured, reference, strict=True)]
    return {
        name: round(median(measured) / median(reference), digits),
        f"{name}_per_round": [round(x, digits) for x in per_round],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def times_ms(call: Callable[[], object], repeat: int) -> list[float]:
    """``repeat`` timings of ``call`` in milliseconds, after one untimed call that warms the
    caches (a page's first request pays for imports, templates and cold pages)."""
    call()
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        found.append((time.perf_counter() - started) * 1000)
    return found
