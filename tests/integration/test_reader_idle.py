"""After hours without a badge the first tap is still read promptly (nfcpy issue 62).

A PN532 on a Pi was seen taking seconds to find a badge after hours idle. The emulator models
that chip: left idle longer than ``slow_after_idle_s`` by the shared clock, it answers each
poll ``slow_poll_s`` late until it is initialised again. Time is compressed: the test moves the
shared clock ten hours forward instead of waiting.
"""

from __future__ import annotations

import threading
import time

import pytest

from siteclock.hw.base import ReaderState
from siteclock.hw.nfc_reader import NfcReader
from siteclock.hw.pn532_emulator import PN532Emulator, frontend_for_pty
from tests.support.readers import ReaderFeed
from tests.support.waiting import wait_until

UID = bytes.fromhex("04A1B2C3D4E5F6")
IN_LIST_PASSIVE_TARGET = 0x4A
HOUR = 3600.0


class JumpingClock:
    """Monotonic time plus jumps a test makes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jumped = 0.0

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._jumped

    def jump(self, seconds: float) -> None:
        with self._lock:
            self._jumped += seconds


@pytest.fixture
def clock():
    return JumpingClock()


@pytest.fixture
def chip(clock):
    with PN532Emulator(clock=clock, slow_after_idle_s=HOUR, slow_poll_s=0.6) as chip:
        yield chip


def polls(chip):
    return chip.commands.count(IN_LIST_PASSIVE_TARGET)


def idle_ten_hours_then_tap(chip, clock, reader, *, step_s=10 * HOUR):
    """Ten idle hours pass in steps of ``step_s``, each seen by at least two polls."""
    feed = ReaderFeed(reader)
    try:
        feed.status(ReaderState.OK)
        for _ in range(round(10 * HOUR / step_s)):
            clock.jump(step_s)
            seen = polls(chip)
            wait_until(lambda seen=seen: polls(chip) >= seen + 2, timeout=10, interval=0.01)
        chip.place(UID)
        read = feed.read(timeout=10)
        assert read.badge == "nfc-a:" + UID.hex().upper()
        return read
    finally:
        feed.close()


@pytest.mark.slow
def test_reader_reinitialises_a_long_idle_chip_before_it_slows(chip, clock):
    reader = NfcReader(
        chip.path, frontend_factory=frontend_for_pty, clock=clock, refresh_idle_s=15 * 60
    )
    idle_ten_hours_then_tap(chip, clock, reader, step_s=10 * 60)
    assert reader.reinits >= 1
    assert chip.slow_answers == 0  # no poll ever met the slowed chip


def test_reader_reinitialises_a_chip_whose_polls_turn_slow(chip, clock):
    reader = NfcReader(
        chip.path, frontend_factory=frontend_for_pty, clock=clock, refresh_idle_s=None
    )
    idle_ten_hours_then_tap(chip, clock, reader)
    assert reader.reinits >= 1
    assert chip.slow_answers == 1  # one slow poll, then a fresh init woke the chip


def test_without_either_defence_every_poll_stays_slow(chip, clock):
    # The control: the model really slows the chip, so the two tests above can fail.
    reader = NfcReader(
        chip.path,
        frontend_factory=frontend_for_pty,
        clock=clock,
        refresh_idle_s=None,
        slow_poll_s=5.0,
    )
    idle_ten_hours_then_tap(chip, clock, reader)
    assert reader.reinits == 0
    assert chip.slow_answers >= 1
