"""nfcpy's real ``pn532`` driver, through pyserial and a pty, against the PN532 emulator."""

from __future__ import annotations

import os
import time

import pytest

from siteclock.hw.base import ReaderState
from siteclock.hw.nfc_reader import NfcReader
from siteclock.hw.pn532_emulator import (
    ACK,
    ERROR_FRAME,
    NACK,
    FrameSplitter,
    PN532Emulator,
    command_frame,
    crc_a,
    frontend_for_pty,
    information_frame,
    response_frame,
)
from tests.support.readers import ReaderFeed

UID4 = bytes.fromhex("A1B2C3D4")
UID7 = bytes.fromhex("04A1B2C3D4E5F6")
UID10 = bytes.fromhex("04A1B2C3D4E5F6A7B8C9")
GET_FIRMWARE_VERSION, IN_LIST_PASSIVE_TARGET, POWER_DOWN = 0x02, 0x4A, 0x16


# --------------------------------------------------------------------------- the frames


def test_frames_read_like_the_user_manual():
    assert command_frame(GET_FIRMWARE_VERSION) == bytes.fromhex("0000ff02fed4022a00")
    assert response_frame(0x14) == bytes.fromhex("0000ff02fed5151600")  # SAMConfiguration
    assert response_frame(0x10) == bytes.fromhex("0000ff02fed5111a00")  # SetSerialBaudrate


def test_long_frames_use_the_extended_form():
    body = bytes([0xD5, 0x01]) + bytes(range(256)) + bytes(7)
    frame = information_frame(body)
    assert frame[:5] == bytes.fromhex("0000ffffff")
    assert int.from_bytes(frame[5:7], "big") == len(body)
    assert (frame[5] + frame[6] + frame[7]) & 0xFF == 0
    assert FrameSplitter().feed(frame) == [body]


def test_crc_a_matches_nfcpy():
    import nfc.clf.device

    for data in (b"", b"\x00", bytes(range(16)), UID7):
        assert nfc.clf.device.Device.check_crc_a(bytearray(data + crc_a(data)))
    assert crc_a(b"\x00\x00") == bytes.fromhex("a01e")  # ISO/IEC 14443-3 annex B example


def test_splitter_skips_preambles_and_noise_and_keeps_acks():
    splitter = FrameSplitter()
    stream = bytes(10) + command_frame(2) + b"\x13\x37" + ACK + NACK
    assert splitter.feed(stream[:9]) == []
    assert splitter.feed(stream[9:]) == [bytes([0xD4, 0x02]), ACK, NACK]
    bad = bytearray(command_frame(2))
    bad[-2] ^= 0xFF  # data checksum
    assert splitter.feed(bytes(bad) + command_frame(4)) == [bytes([0xD4, 0x04])]
    assert splitter.dropped > 10


# --------------------------------------------------------------------------- the emulator


@pytest.fixture
def chip():
    with PN532Emulator() as chip:
        yield chip


def ask(fd: int, frame: bytes, size: int) -> bytes:
    os.write(fd, frame)
    deadline, data = time.monotonic() + 2, b""
    while len(data) < size and time.monotonic() < deadline:
        data += os.read(fd, size - len(data))
    return data


def test_emulator_answers_a_raw_host(chip):
    firmware = ACK + response_frame(GET_FIRMWARE_VERSION, bytes([0x32, 1, 6, 7]))
    target = response_frame(IN_LIST_PASSIVE_TARGET, bytes.fromhex("0101004400 07") + UID7)
    fd = os.open(chip.path, os.O_RDWR | os.O_NOCTTY)
    try:
        assert ask(fd, bytes(10) + command_frame(GET_FIRMWARE_VERSION), 19) == firmware
        assert ask(fd, NACK, 13) == firmware[6:]  # NACK: send the last response again
        assert ask(fd, command_frame(0x7E), 14) == ACK + ERROR_FRAME  # unknown command
        chip.place(UID7)
        assert ask(fd, command_frame(IN_LIST_PASSIVE_TARGET, b"\x01\x00"), 6 + len(target)) == (
            ACK + target
        )
    finally:
        os.close(fd)
    assert chip.commands == [GET_FIRMWARE_VERSION, 0x7E, IN_LIST_PASSIVE_TARGET]


def test_emulator_rejects_impossible_uids(chip):
    with pytest.raises(ValueError, match="4, 7 or 10 bytes"):
        chip.place(b"\x01\x02\x03")


def test_unplug_removes_the_path_and_replug_brings_it_back(chip):
    path = chip.path
    chip.unplug()
    assert not os.path.exists(path)
    chip.replug()
    assert os.path.exists(path)
    assert chip.path == path


def test_close_removes_the_path():
    chip = PN532Emulator()
    chip.close()
    chip.close()
    assert not os.path.exists(chip.path)


# --------------------------------------------------------------------------- NfcReader on it


@pytest.fixture
def feed(chip):
    reader = NfcReader(
        chip.path,
        frontend_factory=frontend_for_pty,
        reopen_interval_s=0.2,
        poll_interval_s=0.05,
        debounce_s=0.3,
    )
    feed = ReaderFeed(reader)
    feed.status(ReaderState.OK)
    yield feed
    feed.close()


@pytest.mark.parametrize("uid", [UID4, UID7, UID10], ids=["4-byte", "7-byte", "10-byte"])
def test_reads_uid(chip, feed, uid):
    before = time.monotonic_ns()
    chip.place(uid)
    read = feed.read()
    assert read.badge == "nfc-a:" + uid.hex().upper()
    assert read.at_ns >= before
    assert read.repeat is False


def test_held_badge_is_one_read_and_a_second_tap_is_another(chip, feed):
    chip.place(UID7)
    feed.read()
    assert feed.quiet_for(1.0) == []  # held for a second: found at every poll, no new read
    chip.remove()
    time.sleep(0.5)  # taken away for longer than the debounce
    chip.place(UID7)
    assert feed.read().badge == "nfc-a:" + UID7.hex().upper()
    assert len(feed.reads()) == 2


def test_held_mifare_classic_is_one_read(chip, feed):
    # The reader finds a held badge again at every poll (it never activates the tag, so a
    # Classic that cannot be read without authentication is no different): one read.
    chip.place(UID4, sak=0x08)
    assert feed.read().badge == "nfc-a:A1B2C3D4"
    assert feed.quiet_for(1.0) == []
    assert chip.commands.count(IN_LIST_PASSIVE_TARGET) > 5


@pytest.mark.parametrize("badge_held", [False, True], ids=["polling", "badge-held"])
def test_reader_that_disappears_is_a_fault_then_ok_and_reads_again(chip, feed, badge_held):
    if badge_held:  # nfcpy is in its presence-check loop when the reader goes
        chip.place(UID7)
        feed.read()
    chip.unplug()
    chip.remove()
    fault = feed.status(ReaderState.FAULT)
    assert chip.path in fault.detail
    assert "retrying every 0.2 s" in fault.detail
    assert ";" in fault.detail  # the cause, then the next step
    chip.replug()
    feed.status(ReaderState.OK)
    chip.place(UID4)
    assert feed.read().badge == "nfc-a:A1B2C3D4"
    assert feed.error is None


def test_garbage_on_the_line_does_not_stop_later_taps(chip, feed):
    chip.place(UID4)
    feed.read()
    for noise in (
        b"\x00\xff\x05\xfb\xd5\x4b\x00",  # a frame cut short
        bytes(range(256)),
        b"\x00\x00\xff\x03\xfd\xd5\x43\x00\xe8\x00",  # a well-formed but unasked-for frame
    ):
        chip.inject_garbage(noise)
        time.sleep(0.15)
    chip.remove()
    time.sleep(0.5)
    chip.place(UID7)
    assert feed.read().badge == "nfc-a:" + UID7.hex().upper()
    assert feed.error is None


def test_close_is_prompt_and_powers_the_chip_down(chip, feed):
    chip.place(UID7)
    feed.read()  # close while nfcpy waits for the badge to leave
    assert feed.close() < 1.0
    assert chip.commands[-1] == POWER_DOWN


def test_reader_missing_at_start_is_a_fault_then_ok_when_plugged(chip):
    chip.unplug()
    feed = ReaderFeed(
        NfcReader(chip.path, frontend_factory=frontend_for_pty, reopen_interval_s=0.1)
    )
    fault = feed.status(ReaderState.FAULT)
    assert "no reader at" in fault.detail
    assert "plugged in" in fault.detail
    chip.replug()
    feed.status(ReaderState.OK)
    chip.place(UID4)
    assert feed.read().badge == "nfc-a:A1B2C3D4"
    feed.close()


def test_pn532_spec_uses_the_default_factory(chip):
    feed = ReaderFeed(NfcReader("pn532:" + chip.path))
    feed.status(ReaderState.OK)
    chip.place(UID4)
    assert feed.read().badge == "nfc-a:A1B2C3D4"
    feed.close()
