from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from siteclock.hw.base import BadgeRead, ReaderState
from siteclock.hw.errors import BadgeSpecError
from siteclock.hw.sim import SimReader, parse_badge, send_taps
from tests.support.readers import ReaderFeed


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "taps.sock")


@pytest.fixture
def feed(sock_path):
    feed = ReaderFeed(SimReader(sock_path, poll_s=0.02))
    feed.status(ReaderState.OK)
    yield feed
    feed.close()


@pytest.mark.parametrize(
    ("line", "badge"),
    [
        ("nfc-a:04A1B2C3", "nfc-a:04A1B2C3"),
        ("04a1b2c3", "nfc-a:04A1B2C3"),
        ("  04A1B2C3D4E5F6\r", "nfc-a:04A1B2C3D4E5F6"),
        ("EM4100:62e3086ced", "em4100:62E3086CED"),
        ("sim:01", "sim:01"),
    ],
)
def test_parse_badge_normalises(line, badge):
    assert parse_badge(line) == badge


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "empty"),
        ("hello", "not hexadecimal"),
        ("04A1B", "odd number"),
        ("bluetooth:04A1B2C3", "technology"),
        ("nfc-a:" + "AB" * 21, "2 to 40 hex digits"),
    ],
)
def test_parse_badge_explains_what_is_wrong(line, why):
    with pytest.raises(BadgeSpecError, match=why):
        parse_badge(line)


def test_valid_lines_are_reads_and_answered_ok(feed, sock_path):
    before = time.monotonic_ns()
    assert send_taps(sock_path, ["nfc-a:04A1B2C3", "04a1b2c3d4e5f6"]) == ["ok", "ok"]
    first, second = feed.read(), feed.read()
    assert first == BadgeRead("nfc-a:04A1B2C3", first.at_ns)
    assert second.badge == "nfc-a:04A1B2C3D4E5F6"
    assert before <= first.at_ns <= second.at_ns <= time.monotonic_ns()
    assert feed.reader.counters == {"taps": 2, "invalid_lines": 0}


def test_invalid_lines_are_answered_with_the_reason_and_counted(feed, sock_path):
    replies = send_taps(sock_path, ["not a badge", "", "04A1B2C3", "x" * 300])
    assert replies[0].startswith("error: ")
    assert "hexadecimal" in replies[0]
    assert replies[1].startswith("error: empty line")
    assert replies[2] == "ok"
    assert replies[3] == "error: line longer than 256 bytes"
    assert feed.read().badge == "nfc-a:04A1B2C3"
    assert feed.quiet_for(0.1) == []
    assert feed.reader.counters == {"taps": 1, "invalid_lines": 3}


def test_non_ascii_line_is_an_error(feed, sock_path):
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(sock_path)
        client.sendall("04A1B2C3é\n".encode())
        assert client.recv(100) == b"error: not ASCII text\n"


def test_several_clients_and_a_client_that_hangs_up(feed, sock_path):
    with socket.socket(socket.AF_UNIX) as quitter:
        quitter.connect(sock_path)
        quitter.sendall(b"0A0B")  # no newline: an unfinished line is dropped with the client
    assert send_taps(sock_path, ["0C0D"]) == ["ok"]
    assert send_taps(sock_path, ["0E0F"]) == ["ok"]
    assert [feed.read().badge, feed.read().badge] == ["nfc-a:0C0D", "nfc-a:0E0F"]


def test_socket_is_private_by_default_and_removed_on_close(sock_path):
    feed = ReaderFeed(SimReader(sock_path, poll_s=0.02))
    feed.status(ReaderState.OK)
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    assert feed.close() < 0.5
    assert not os.path.exists(sock_path)


def test_group_mode(sock_path):
    old = os.umask(0o077)  # the mode is exact whatever the umask
    try:
        feed = ReaderFeed(SimReader(sock_path, mode=0o660, poll_s=0.02))
        feed.status(ReaderState.OK)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    feed.close()


def test_stale_socket_file_is_replaced(sock_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock_path)
    stale.close()  # the file stays, nobody listens: left by a process that died
    feed = ReaderFeed(SimReader(sock_path, poll_s=0.02))
    feed.status(ReaderState.OK)
    assert send_taps(sock_path, ["AA"]) == ["ok"]
    feed.close()


def test_path_held_by_a_live_listener_or_a_file_is_a_fault(sock_path, tmp_path):
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(sock_path)
        other.listen(1)
        feed = ReaderFeed(SimReader(sock_path, reopen_interval_s=0.05))
        assert "another process listens" in feed.status(ReaderState.FAULT).detail
        feed.close()
    regular = tmp_path / "plain"
    regular.write_text("keep me")
    feed = ReaderFeed(SimReader(str(regular), reopen_interval_s=0.05))
    assert "is not a socket" in feed.status(ReaderState.FAULT).detail
    feed.close()
    assert regular.read_text() == "keep me"


def test_missing_directory_is_a_fault_then_ok_when_created(tmp_path):
    path = tmp_path / "run" / "taps.sock"
    feed = ReaderFeed(SimReader(str(path), reopen_interval_s=0.05, poll_s=0.02))
    fault = feed.status(ReaderState.FAULT)
    assert "retrying every 0.05 s" in fault.detail
    path.parent.mkdir()
    feed.status(ReaderState.OK)
    assert send_taps(str(path), ["01020304"]) == ["ok"]
    assert feed.read().badge == "nfc-a:01020304"
    feed.close()


def test_send_taps_to_nothing_raises(sock_path):
    with pytest.raises(FileNotFoundError):
        send_taps(sock_path, ["AA"])
