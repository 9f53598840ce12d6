"""Clock trust is read without privileges, never waits, and degrades to 'unknown'."""

from __future__ import annotations

import time
import uuid

import pytest

from siteclock.terminal import clock


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(clock, "_cached", None)


def test_adjtimex_reads_maxerror_unprivileged() -> None:
    state = clock.read_clock_uncached()
    assert state.source == "adjtimex"
    assert state.maxerror_us >= 0
    assert state.synced == (state.maxerror_us < clock.SYNC_LIMIT_US)


def test_falls_back_to_timesyncd_flag(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(clock, "_from_adjtimex", lambda: None)
    flag = tmp_path / "synchronized"
    monkeypatch.setattr(clock, "SYNC_FLAG", flag)
    assert clock.read_clock_uncached().source == "unknown"
    assert clock.read_clock_uncached().synced is False
    flag.touch()
    state = clock.read_clock_uncached()
    assert (state.synced, state.source, state.maxerror_us) == (True, "timesyncd", -1)


def test_read_clock_is_cached(monkeypatch) -> None:
    calls = []
    real = clock.read_clock_uncached

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(clock, "read_clock_uncached", counting)
    first = clock.read_clock()
    for _ in range(100):
        assert clock.read_clock() == first
    assert len(calls) == 1


def test_boot_stamps() -> None:
    uuid.UUID(clock.boot_id())  # the kernel's boot id is a UUID
    a = clock.boot_ns()
    time.sleep(0.001)
    assert clock.boot_ns() > a
    assert abs(clock.wall_ns() - time.time_ns()) < 10**9
