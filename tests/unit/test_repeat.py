from __future__ import annotations

from siteclock.hw.base import BadgeRead, ReaderState, ReaderStatus
from siteclock.hw.repeat import mark_repeats


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(events, window_s=10.0):
    """events: (seconds after start, item); returns the marked items."""
    clock = FakeClock()
    start = clock.now

    def timed():
        for at, item in events:
            clock.now = start + at
            yield item

    return list(mark_repeats(timed(), window_s=window_s, clock=clock))


def tap(badge: str = "nfc-a:04A1B2C3") -> BadgeRead:
    return BadgeRead(badge, at_ns=0)


def test_first_read_is_not_a_repeat():
    [item] = run([(0, tap())])
    assert item == tap()


def test_same_badge_within_window_is_a_repeat():
    out = run([(0, tap()), (9.9, tap())])
    assert [r.repeat for r in out] == [False, True]
    assert out[1].badge == "nfc-a:04A1B2C3"


def test_same_badge_after_window_is_a_new_read():
    out = run([(0, tap()), (10.0, tap())])
    assert [r.repeat for r in out] == [False, False]


def test_window_runs_from_the_previous_read_even_a_repeat():
    out = run([(0, tap()), (6, tap()), (12, tap()), (22.5, tap())])
    assert [r.repeat for r in out] == [False, True, True, False]


def test_other_badges_do_not_interfere():
    out = run([(0, tap("nfc-a:AA")), (1, tap("nfc-a:BB")), (2, tap("nfc-a:AA"))])
    assert [r.repeat for r in out] == [False, False, True]


def test_statuses_pass_through_untouched_and_do_not_reset_the_window():
    fault = ReaderStatus(ReaderState.FAULT, "gone; replug it")
    ok = ReaderStatus(ReaderState.OK)
    out = run([(0, tap()), (1, fault), (2, ok), (3, tap())])
    assert out[1] is fault
    assert out[2] is ok
    assert out[3].repeat is True


def test_input_items_are_not_mutated():
    first, second = tap(), tap()
    out = run([(0, first), (1, second)])
    assert second.repeat is False
    assert out[1] is not second


def test_custom_window():
    out = run([(0, tap()), (2.5, tap()), (6, tap())], window_s=3.0)
    assert [r.repeat for r in out] == [False, True, False]
