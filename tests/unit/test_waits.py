"""Issue 11, Seen 2 and 6: a wait is said at once, again every period while it lasts (never
once per poll), and its end is said too: never "running" and then silence."""

from __future__ import annotations

import logging

import pytest

from siteclock.waits import Wait, WaitReporter
from tests.support.clock import ManualClock


def test_wait_is_logged_at_once_then_once_per_period_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    reporter = WaitReporter("gateway waiting for the broker", report_every_s=30.0, clock=clock)
    down = Wait("nothing answers at localhost:8884: Connection refused", "start the broker")
    with caplog.at_level(logging.INFO, logger="siteclock.waits"):
        for _ in range(120):  # two minutes of polls every second
            reporter.update(down)
            clock.now += 1.0
        assert reporter.waited_s() == pytest.approx(120.0)
        reporter.update(None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # at 0, 30, 60, 90 s: loud, repeated, rate-limited
    assert [r.fields["waited_s"] for r in warnings] == [0.0, 30.0, 60.0, 90.0]  # type: ignore[attr-defined]
    assert all(r.fields["cause"] == down.cause for r in warnings)  # type: ignore[attr-defined]
    assert all(r.fields["next"] == "start the broker" for r in warnings)  # type: ignore[attr-defined]
    over = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in over] == ["gateway waiting for the broker: over"]
    assert reporter.current is None


def test_a_new_cause_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    reporter = WaitReporter("w", report_every_s=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="siteclock.waits"):
        reporter.update(Wait("refused", "a"))
        clock.now += 1
        reporter.update(Wait("refused", "a"))
        reporter.update(Wait("login refused: Not authorized", "b"))
    assert [r.fields["cause"] for r in caplog.records] == [  # type: ignore[attr-defined]
        "refused",
        "login refused: Not authorized",
    ]
