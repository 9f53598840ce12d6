"""nfcpy's own device paths through NfcReader: the ``udp`` driver, and ``usb`` with no libusb."""

from __future__ import annotations

import ctypes.util
import time

import pytest

from siteclock.hw import open_reader
from siteclock.hw.base import ReaderState
from siteclock.hw.nfc_reader import NfcReader
from tests.support.readers import ReaderFeed
from tests.support.udp_tag import UdpTag


@pytest.fixture
def tag():
    tag = UdpTag()
    yield tag
    tag.close()


@pytest.mark.parametrize("uid", ["DEADBEEF", "04A1B2C3D4E5F6"])
def test_reads_a_uid_through_the_udp_driver(tag, uid):
    feed = ReaderFeed(NfcReader(tag.path, poll_interval_s=0.05))
    feed.status(ReaderState.OK)
    tag.place(bytes.fromhex(uid))
    assert feed.read().badge == f"nfc-a:{uid}"
    assert feed.quiet_for(0.5) == []  # held: nfcpy's presence checks keep it one read
    tag.remove()
    assert feed.close() < 2.0


def test_open_reader_builds_the_udp_reader(tag):
    reader = open_reader(tag.path)
    assert isinstance(reader, NfcReader)
    assert reader.name == tag.path
    feed = ReaderFeed(reader)
    tag.place(bytes.fromhex("01020304"))
    assert feed.read().badge == "nfc-a:01020304"
    feed.close()


@pytest.mark.skipif(
    ctypes.util.find_library("usb-1.0") is not None, reason="libusb is installed here"
)
def test_usb_without_libusb_is_a_fault_with_the_fix_not_an_exception():
    feed = ReaderFeed(NfcReader("usb", reopen_interval_s=0.1))
    fault = feed.status(ReaderState.FAULT)
    assert "libusb-1.0 is not installed" in fault.detail
    assert "install the Debian package libusb-1.0-0" in fault.detail
    time.sleep(0.3)  # it keeps retrying, quietly
    assert feed.history == [fault]
    assert feed.close() < 1.0
