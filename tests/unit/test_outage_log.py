"""OutageLog: a minute of an unplugged reader, compressed, gives a handful of lines, not 240."""

from __future__ import annotations

import logging

import nfc.clf.pn532  # noqa: F401 - the driver's loggers exist once it is loaded, as in use
import pytest

from siteclock.hw.outage_log import OutageLog
from tests.support.readers import nfcpy_lines_audible  # noqa: F401 - a fixture


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


pytestmark = pytest.mark.usefixtures("nfcpy_lines_audible")


def lines(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_minute_unplugged_is_one_line_a_summary_and_one_line_back(caplog, clock):
    product = logging.getLogger("siteclock.test.reader")
    driver = logging.getLogger("nfc.clf")  # where nfcpy logs "no reader available on path"
    outage = OutageLog("tty:AMA0:pn532", product, summary_interval_s=30, clock=clock)
    outage.attach()
    try:
        with caplog.at_level(logging.INFO):
            for tick in range(120):  # two tries a second for 60 s, each with a driver ERROR
                clock.now = tick * 0.5
                driver.error("no reader available on path tty:AMA0:pn532")
                outage.failed("no reader at 'tty:AMA0:pn532'; check that it is plugged in")
            clock.now = 60.0
            outage.recovered()
            driver.error("an error once the reader is back is shown")
    finally:
        outage.detach()
    messages = [r.getMessage() for r in lines(caplog)]
    # The first driver line comes before the outage starts: the driver says first what broke.
    assert messages[0] == "no reader available on path tty:AMA0:pn532"
    assert messages[1].startswith("reader tty:AMA0:pn532: no reader at")
    assert messages[2].startswith("reader tty:AMA0:pn532 still unavailable after 30 s")
    assert "(61 attempts, 60 driver lines not shown)" in messages[2]
    assert messages[3] == (
        "reader tty:AMA0:pn532 is back after 60 s (120 attempts, 119 driver lines not shown)"
    )
    assert messages[4] == "an error once the reader is back is shown"
    assert len(messages) == 5


def test_only_debug_from_the_driver_passes_during_an_outage(caplog, clock):
    outage = OutageLog("r", logging.getLogger("siteclock.test.reader"), clock=clock)
    outage.attach()
    try:
        outage.failed("gone; plug it in")
        with caplog.at_level(logging.DEBUG, logger="nfc"):
            logging.getLogger("nfc.clf.pn532").debug("a debug line")
            logging.getLogger("nfc.clf").info("searching for reader on path tty:AMA0:pn532")
            logging.getLogger("nfc.clf.pn532").error("an error")
    finally:
        outage.detach()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("nfc")] == ["a debug line"]
    assert outage.suppressed == 2


def test_recovered_without_an_outage_is_a_quiet_info(caplog, clock):
    outage = OutageLog("r", logging.getLogger("siteclock.test.reader"), clock=clock)
    with caplog.at_level(logging.INFO):
        outage.recovered()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "reader r is ready")
    ]
