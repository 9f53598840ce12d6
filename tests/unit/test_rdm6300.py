from __future__ import annotations

import threading
import time

import pytest
import serial
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from siteclock.hw.base import ReaderState, ReaderStatus
from siteclock.hw.errors import FrameError
from siteclock.hw.rdm6300 import ETX, STX, FrameParser, Rdm6300Reader, build_frame, checksum
from tests.support.readers import ReaderFeed

CARD = "62E3086CED"
FRAME = b"\x0262E3086CED08\x03"


# --------------------------------------------------------------------------- frames


def test_checksum_is_xor_of_the_five_bytes():
    assert checksum(CARD) == "08"
    assert build_frame(CARD) == FRAME
    assert build_frame(CARD.lower()) == FRAME


def test_checksum_rejects_a_wrong_length():
    with pytest.raises(FrameError):
        checksum("62E3")


def test_parser_reads_one_frame():
    parser = FrameParser()
    assert parser.feed(FRAME) == [CARD]
    assert parser.counters == {
        "frames_ok": 1,
        "bad_checksum": 0,
        "noise_bytes": 0,
        "partial_frames": 0,
    }


@pytest.mark.parametrize("cut", range(1, len(FRAME)))
def test_parser_joins_a_frame_split_anywhere(cut):
    parser = FrameParser()
    assert parser.feed(FRAME[:cut]) == []
    assert parser.feed(FRAME[cut:]) == [CARD]


def test_parser_accepts_lower_case_hex():
    assert FrameParser().feed(FRAME.lower()) == [CARD]


def test_bad_checksum_is_skipped_and_counted():
    parser = FrameParser()
    assert parser.feed(build_frame(CARD, check="09") + FRAME) == [CARD]
    assert parser.counters["bad_checksum"] == 1
    assert parser.counters["frames_ok"] == 1


def test_noise_is_skipped_and_counted():
    parser = FrameParser()
    assert parser.feed(b"\xff\x00junk" + FRAME + b"\x03\x03") == [CARD]
    assert parser.counters["noise_bytes"] == 8


def test_a_frame_cut_short_by_the_next_start_resynchronises():
    parser = FrameParser()
    assert parser.feed(FRAME[:7] + FRAME) == [CARD]
    assert parser.counters["partial_frames"] == 1


def test_a_frame_without_its_end_byte_is_partial():
    parser = FrameParser()
    assert parser.feed(FRAME[:-1] + b"\x00" + FRAME) == [CARD]
    assert parser.counters["partial_frames"] == 1


def test_a_start_byte_in_place_of_the_end_byte_starts_the_next_frame():
    parser = FrameParser()
    assert parser.feed(FRAME[:-1] + FRAME) == [CARD]
    assert parser.counters == {
        "frames_ok": 1,
        "bad_checksum": 0,
        "noise_bytes": 0,
        "partial_frames": 1,
    }


def test_non_hex_inside_a_frame_makes_it_partial():
    parser = FrameParser()
    assert parser.feed(b"\x0262E3G86CED08\x03" + FRAME) == [CARD]
    assert parser.counters["partial_frames"] == 1


# --------------------------------------------------------------------------- properties

cards = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())
# Noise is drawn mostly from bytes that matter to the parser, so it often looks like a frame.
noise_bytes = st.sampled_from([STX, ETX, *b"0123456789ABCDEFabcdef", 0x00, 0x0A, 0xFF, 0x7F])
noise = st.lists(noise_bytes, max_size=40).map(bytes)


def _parse_in_chunks(stream: bytes, cuts: list[int]) -> tuple[list[str], FrameParser]:
    parser = FrameParser()
    out: list[str] = []
    previous = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        out += parser.feed(stream[previous:cut])
        previous = max(previous, cut)
    return out, parser


@settings(max_examples=200, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    frames=st.lists(cards, max_size=6),
    noises=st.lists(noise, min_size=7, max_size=7),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_noise_around_valid_frames_never_loses_or_invents_one(frames, noises, cuts):
    # Noise that holds a valid frame of its own is a valid frame, not noise.
    for chunk in noises:
        assume(FrameParser().feed(chunk) == [])
    stream = b""
    for i, card in enumerate(frames):
        stream += noises[i] + build_frame(card)
    stream += noises[len(frames)]

    out, parser = _parse_in_chunks(stream, cuts)

    assert out == frames
    assert parser.counters["frames_ok"] == len(frames)


@given(card=cards, position=st.integers(0, 13), byte=st.integers(0, 255))
def test_a_frame_with_one_byte_changed_is_never_read(card, position, byte):
    frame = bytearray(build_frame(card))
    assume(bytes([frame[position]]).upper() != bytes([byte]).upper())
    frame[position] = byte
    assert FrameParser().feed(bytes(frame)) == []


# --------------------------------------------------------------------------- the reader


class LoopPorts:
    """A port factory for pyserial's ``loop://`` ports that can be unplugged."""

    def __init__(self) -> None:
        self.plugged = True
        self.port: serial.SerialBase | None = None
        self.opened = 0

    def __call__(self) -> serial.SerialBase:
        if not self.plugged:
            raise serial.SerialException(2, "could not open port /dev/ttyS0: No such file")
        self.port = serial.serial_for_url("loop://", timeout=0.05)
        self.opened += 1
        return self.port

    def send(self, data: bytes) -> None:
        assert self.port is not None
        self.port.write(data)

    def hold(self, frame: bytes, seconds: float, every: float = 0.05) -> None:
        """Repeat ``frame`` like the reader does while a card stays in the field."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send(frame)
            time.sleep(every)


@pytest.fixture
def ports():
    return LoopPorts()


@pytest.fixture
def feed(ports):
    feed = ReaderFeed(Rdm6300Reader(ports, removal_s=0.3, reopen_interval_s=0.1))
    feed.status(ReaderState.OK)
    yield feed
    feed.close()


def test_held_card_is_one_read(feed, ports):
    ports.hold(FRAME, 0.6)
    read = feed.read()
    assert read.badge == "em4100:62E3086CED"
    assert read.repeat is False
    assert feed.quiet_for(0.1) == []
    assert feed.reader.counters["frames_ok"] >= 5


def test_card_presented_again_after_removal_is_a_second_read(feed, ports):
    ports.hold(FRAME, 0.2)
    feed.read()
    time.sleep(0.4)  # longer than removal_s without a frame: the card has left
    ports.hold(FRAME, 0.2)
    assert feed.read().badge == "em4100:62E3086CED"
    assert len(feed.reads()) == 2


def test_another_card_is_read_at_once(feed, ports):
    other = build_frame("0100ABCDEF")
    ports.send(FRAME + other)
    assert feed.read().badge == "em4100:62E3086CED"
    assert feed.read().badge == "em4100:0100ABCDEF"


def test_noise_and_bad_frames_are_counted_not_read(feed, ports):
    ports.send(b"\x00\xff" + build_frame(CARD, check="00") + FRAME[:5])
    ports.send(FRAME)
    assert feed.read().badge == "em4100:62E3086CED"
    counters = feed.reader.counters
    assert counters["bad_checksum"] == 1
    assert counters["partial_frames"] == 1
    assert counters["noise_bytes"] == 2
    assert len(feed.reads()) == 1


def test_port_that_disappears_is_a_fault_then_ok_when_back(feed, ports):
    ports.plugged = False
    ports.port.close()  # the USB-serial adapter is pulled out under the reader
    fault = feed.status(ReaderState.FAULT)
    assert "rdm6300" in fault.detail
    assert "retrying" in fault.detail
    ports.plugged = True
    feed.status(ReaderState.OK)
    ports.hold(FRAME, 0.1)
    assert feed.read().badge == "em4100:62E3086CED"


def test_port_missing_at_start_is_a_fault_with_the_next_step(ports):
    ports.plugged = False
    feed = ReaderFeed(Rdm6300Reader(ports, reopen_interval_s=0.05))
    fault = feed.status(ReaderState.FAULT)
    assert "cannot open the serial port" in fault.detail
    assert "dialout" in fault.detail
    time.sleep(0.2)  # several retries, one status
    assert [i for i in feed.history if isinstance(i, ReaderStatus)] == [fault]
    assert feed.close() < 1.0


def test_close_from_another_thread_ends_reads_promptly(ports):
    reader = Rdm6300Reader(ports)
    feed = ReaderFeed(reader)
    feed.status(ReaderState.OK)
    timer = threading.Timer(0.05, reader.close)
    timer.start()
    assert feed.close() < 0.5
    assert not ports.port.is_open
