"""The reader takes the UID from the anticollision answer and is never blind after a badge.

Real nfcpy ``pn532`` driver against the emulated chip, whose tag stays silent for the commands
a plain Ultralight does not answer (each costs the chip's timeout, as on a real line): the
commands the chip receives show what the reader asked for.
"""

from __future__ import annotations

import pytest

from siteclock.hw.base import ReaderState
from siteclock.hw.nfc_reader import NfcReader
from siteclock.hw.pn532_emulator import PN532Emulator, frontend_for_pty
from tests.support.readers import ReaderFeed

IN_LIST_PASSIVE_TARGET, IN_COMMUNICATE_THRU = 0x4A, 0x42
ULTRALIGHT = bytes.fromhex("04A1B2C3D4E5F6")  # 7-byte NXP UID, SAK 00: nfcpy would probe it
CLASSIC = bytes.fromhex("A1B2C3D4")


@pytest.fixture
def chip():
    with PN532Emulator() as chip:
        yield chip


@pytest.fixture
def feed(chip):
    feed = ReaderFeed(NfcReader(chip.path, frontend_factory=frontend_for_pty))
    feed.status(ReaderState.OK)
    yield feed
    feed.close()


@pytest.mark.parametrize("uid", [ULTRALIGHT, CLASSIC], ids=["7-byte", "4-byte"])
def test_uid_is_read_without_activating_the_tag(chip, feed, uid):
    chip.place(uid)
    assert feed.read().badge == "nfc-a:" + uid.hex().upper()
    assert feed.quiet_for(0.3) == []  # held: found again at each poll, still one read
    # No authenticate, GET_VERSION or READ went to the tag: nothing but the anticollision.
    assert IN_COMMUNICATE_THRU not in chip.commands
    assert chip.commands.count(IN_LIST_PASSIVE_TARGET) > 2


def test_next_badge_is_found_by_the_next_poll_after_one_leaves(chip, feed):
    chip.place(ULTRALIGHT)
    feed.read()
    polls_before = chip.commands.count(IN_LIST_PASSIVE_TARGET)
    chip.remove()
    chip.place(CLASSIC)  # a second worker's badge, the moment the first one left
    assert feed.read().badge == "nfc-a:A1B2C3D4"
    # One or two polls later (the one running when it came, then the next), with no presence
    # check in between: there is no window after a badge leaves in which the reader is blind.
    assert chip.commands.count(IN_LIST_PASSIVE_TARGET) - polls_before <= 3
    assert IN_COMMUNICATE_THRU not in chip.commands


def test_same_badge_lifted_and_put_back_later_is_a_second_read(chip, feed):
    chip.place(CLASSIC)
    feed.read()
    chip.remove()
    feed.quiet_for(0.5)  # longer than the debounce
    chip.place(CLASSIC)
    feed.read()
    assert [r.badge for r in feed.reads()] == ["nfc-a:A1B2C3D4"] * 2
