"""NfcReader's own rules, with fake frontends in place of nfcpy's (the factory is the seam)."""

from __future__ import annotations

import errno
import threading
import time
from types import SimpleNamespace

import pytest

from siteclock.hw.base import ReaderState, ReaderStatus
from siteclock.hw.errors import (
    ReaderAccessDenied,
    ReaderBusy,
    ReaderDriverFailed,
    ReaderDriverMissing,
    ReaderGone,
    ReaderNotFound,
)
from siteclock.hw.nfc_reader import NfcReader, translate
from tests.support.readers import ReaderFeed


class FakeFrontend:
    """Plays ``ContactlessFrontend.sense(*targets, iterations=1)`` from a script.

    Each script step is one poll: a tag identifier (found), ``None`` (empty field) or an
    exception to raise. An empty script is an empty field.
    """

    def __init__(self, script, brty="106A"):
        self.script = list(script)
        self.brty = brty
        self.closed = False
        self.device = None
        self.polls = 0

    def sense(self, *targets, iterations):
        assert iterations == 1
        self.polls += 1
        if not self.script:
            return None
        step = self.script.pop(0)
        if step is None:
            return None
        if isinstance(step, BaseException):
            raise step
        if self.brty.endswith("F"):
            return SimpleNamespace(brty=self.brty, sensf_res=b"\x01" + step + bytes(8))
        return SimpleNamespace(brty=self.brty, sdd_res=bytearray(step), rid_res=None)

    def close(self):
        self.closed = True


class Factory:
    """Hands out the next scripted frontend, or raises the next scripted error."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.opened = []

    def __call__(self, path):
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        self.opened.append(outcome)
        return outcome


def reader(factory, **kwargs):
    kwargs.setdefault("reopen_interval_s", 0.05)
    kwargs.setdefault("poll_interval_s", 0.01)
    return NfcReader("tty:AMA0:pn532", frontend_factory=factory, **kwargs)


def statuses(feed):
    return [i for i in feed.history if isinstance(i, ReaderStatus)]


def test_reads_carry_technology_and_upper_hex():
    feed = ReaderFeed(reader(Factory(FakeFrontend([b"\x04\xa1\xb2"]))))
    assert feed.status(ReaderState.OK) == ReaderStatus(ReaderState.OK)
    assert feed.read().badge == "nfc-a:04A1B2"
    feed.close()


def test_type_f_badge():
    feed = ReaderFeed(reader(Factory(FakeFrontend([bytes(range(8))], brty="212F"))))
    assert feed.read().badge == "nfc-f:0001020304050607"
    feed.close()


def test_same_badge_found_again_within_debounce_is_one_read():
    frontend = FakeFrontend([b"\xaa\xbb\xcc\xdd"] * 3 + [None, b"\x11\x22\x33\x44"])
    feed = ReaderFeed(reader(Factory(frontend), debounce_s=5.0))
    assert [feed.read().badge, feed.read().badge] == ["nfc-a:AABBCCDD", "nfc-a:11223344"]
    feed.close()


def test_same_badge_after_debounce_is_a_new_read():
    frontend = FakeFrontend([b"\xaa\xbb\xcc\xdd"])
    feed = ReaderFeed(reader(Factory(frontend), debounce_s=0.05))
    feed.read()
    time.sleep(0.1)
    frontend.script.append(b"\xaa\xbb\xcc\xdd")
    assert feed.read().badge == "nfc-a:AABBCCDD"
    feed.close()


LOST = OSError(errno.EIO, "Input/output error")


def test_one_lost_connection_reopens_quietly():
    first, second = FakeFrontend([LOST]), FakeFrontend([b"\x01\x02\x03\x04"])
    factory = Factory(first, second)
    feed = ReaderFeed(reader(factory))
    assert feed.read().badge == "nfc-a:01020304"
    assert statuses(feed) == [ReaderStatus(ReaderState.OK)]
    assert first.closed
    assert factory.opened == [first, second]
    feed.close()


def test_connection_lost_again_and_again_is_a_fault():
    factory = Factory(FakeFrontend([LOST]), FakeFrontend([LOST]), FakeFrontend([]))
    feed = ReaderFeed(reader(factory))
    fault = feed.status(ReaderState.FAULT)
    assert "stopped answering" in fault.detail
    assert "check its cable" in fault.detail
    feed.status(ReaderState.OK)
    feed.close()


def test_driver_exception_mid_run_is_a_fault_then_ok():
    class ChipsetError(Exception):  # what nfcpy's Chipset.Error looks like from outside
        pass

    factory = Factory(FakeFrontend([ChipsetError("Error 0x7F")]), FakeFrontend([b"\x01"]))
    feed = ReaderFeed(reader(factory))
    fault = feed.status(ReaderState.FAULT)
    assert "the NFC driver failed" in fault.detail
    assert "ChipsetError" in fault.detail
    feed.status(ReaderState.OK)
    assert feed.read().badge == "nfc-a:01"
    feed.close()


def test_device_missing_then_back():
    gone = OSError(errno.ENODEV, "No such device")
    factory = Factory(gone, gone, FakeFrontend([b"\x05"]))
    feed = ReaderFeed(reader(factory))
    fault = feed.status(ReaderState.FAULT)
    assert fault.detail.startswith("no reader at 'tty:AMA0:pn532' (No such device)")
    assert fault.detail.endswith("; retrying every 0.05 s")
    feed.status(ReaderState.OK)
    assert feed.read().badge == "nfc-a:05"
    assert statuses(feed) == [fault, ReaderStatus(ReaderState.OK)]  # one FAULT for two tries
    feed.close()


def test_unexpected_factory_error_never_escapes():
    feed = ReaderFeed(reader(Factory(KeyError("boom"))))
    assert "KeyError" in feed.status(ReaderState.FAULT).detail
    feed.close()


def test_close_from_another_thread_is_prompt_and_closes_the_frontend():
    frontend = FakeFrontend([])
    r = reader(Factory(frontend))
    feed = ReaderFeed(r)
    feed.status(ReaderState.OK)
    threading.Timer(0.05, r.close).start()
    assert feed.close() < 0.5
    assert frontend.closed
    r.close()  # twice is fine


def test_reads_twice_at_once_is_refused():
    r = reader(Factory(FakeFrontend([])))
    feed = ReaderFeed(r)
    feed.status(ReaderState.OK)
    with pytest.raises(RuntimeError, match="already running"):
        next(r.reads())
    feed.close()


@pytest.mark.parametrize(
    ("error", "kind", "advice"),
    [
        (FileNotFoundError(2, "cannot find a suitable libusb-1.0"), ReaderDriverMissing, "libusb"),
        (OSError(errno.EACCES, "denied"), ReaderAccessDenied, "dialout"),
        (OSError(errno.EBUSY, "busy"), ReaderBusy, "blacklist"),
        (OSError(errno.ENOENT, "no such file"), ReaderNotFound, "plugged in"),
        (OSError(errno.EIO, "I/O error"), ReaderGone, "cable and power"),
        (ValueError("odd"), ReaderDriverFailed, "reopened"),
    ],
)
def test_translate_names_cause_and_next_step(error, kind, advice):
    translated = translate(error, "usb")
    assert isinstance(translated, kind)
    cause, _, step = str(translated).partition("; ")
    assert "'usb'" in cause
    assert advice in str(translated)
    assert step
