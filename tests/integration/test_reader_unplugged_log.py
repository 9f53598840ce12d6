"""An unplugged reader logs one line, a summary now and then, and one line when it is back.

nfcpy logs an ERROR line for every failed open of a ``tty:`` path; before, with a retry every
half second, that was two lines a second for as long as the reader was away. Here a minute
is compressed twentyfold: the reader's clock runs 20 times faster and it retries every 25 ms
(0.5 s of its time), so three real seconds are one minute of an unplugged reader.
"""

from __future__ import annotations

import logging
import time

import pytest

from siteclock.hw.base import ReaderState
from siteclock.hw.nfc_reader import NfcReader
from siteclock.hw.pn532_emulator import PN532Emulator, frontend_for_pty
from tests.support.readers import ReaderFeed, nfcpy_lines_audible  # noqa: F401
from tests.support.waiting import wait_until

SPEED = 20.0
MISSING = "tty:USB987:pn532"  # no /dev/ttyUSB987 here: nfcpy searches /dev and logs an ERROR


def compressed_clock():
    start = time.monotonic()
    return lambda: start + (time.monotonic() - start) * SPEED


pytestmark = pytest.mark.usefixtures("nfcpy_lines_audible")


def warnings_and_errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_compressed_minute_without_the_reader_is_a_few_lines(caplog):
    reader = NfcReader(
        MISSING,
        reopen_interval_s=0.5 / SPEED,
        summary_interval_s=30.0,
        clock=compressed_clock(),
    )
    with caplog.at_level(logging.INFO):
        feed = ReaderFeed(reader)
        fault = feed.status(ReaderState.FAULT)
        started = time.monotonic()
        summaries = lambda: [r for r in caplog.records if "still unavailable" in r.getMessage()]  # noqa: E731
        assert wait_until(lambda: len(summaries()) >= 2, timeout=20), warnings_and_errors(caplog)
        feed.close()
    minutes = (time.monotonic() - started) * SPEED / 60
    lines = warnings_and_errors(caplog)
    from_driver = [r for r in lines if r.name.startswith("nfc")]
    assert len([r for r in caplog.records if r.name.startswith("nfc")]) <= 2  # INFO + ERROR
    ours = [r.getMessage() for r in lines if not r.name.startswith("nfc")]
    assert "plugged in" in fault.detail
    # nfcpy's first ERROR comes before the reader knows it is an outage; the rest are counted.
    assert len(from_driver) == 1, [r.getMessage() for r in from_driver]
    assert from_driver[0].getMessage() == f"no reader available on path {MISSING}"
    assert ours[0].startswith(f"reader {MISSING}: no NFC reader answered at")
    assert all("still unavailable" in line for line in ours[1:]), ours
    assert len(ours) <= 1 + minutes * 2 + 1  # one line, then one summary per 30 s
    suppressed = int(summaries()[-1].getMessage().split(" attempts, ")[1].split()[0])
    assert suppressed >= 40  # what used to reach the log: two lines a second of its time


def test_replugged_reader_says_once_that_it_is_back(caplog):
    with PN532Emulator() as chip:
        reader = NfcReader(chip.path, frontend_factory=frontend_for_pty, reopen_interval_s=0.02)
        feed = ReaderFeed(reader)
        feed.status(ReaderState.OK)
        with caplog.at_level(logging.INFO):
            chip.unplug()
            feed.status(ReaderState.FAULT)
            time.sleep(0.3)  # about 15 failed reopen attempts
            chip.replug()
            feed.status(ReaderState.OK)
            chip.place(bytes.fromhex("A1B2C3D4"))
            assert feed.read().badge == "nfc-a:A1B2C3D4"
        feed.close()
    ours = [r.getMessage() for r in warnings_and_errors(caplog) if r.name.startswith("siteclock")]
    assert len(ours) == 2, ours
    assert chip.path in ours[0]
    assert ours[1].startswith(f"reader {chip.path} is back after")
