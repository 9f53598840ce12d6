"""Terminal config files: good ones load, broken ones name the file and the key.

Also the signing key file (siteclock.keys, named terminal.identity on the terminal): created
private, refused when not.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siteclock.config import ConfigError
from siteclock.terminal import identity
from siteclock.terminal.config import TerminalConfig, UplinkConfig, load

GOOD = """
terminal_id = "t-0001"
workplace = "ABCDEFGH12345"
data_dir = "/var/lib/siteclock"

[reader]
spec = "sim:/run/siteclock/taps.sock"

[feedback]
green_pin = 27
red_pin = "GPIO22"
journal = "/tmp/journal.jsonl"

[capture]
break_pin = 5

[uplink]
host = "gw.example.be"
port = 8884
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_defaults(tmp_path) -> None:
    cfg = load(write(tmp_path, GOOD))
    assert isinstance(cfg, TerminalConfig)
    assert cfg.reader.repeat_window_s == 10.0
    assert (cfg.feedback.green_pin, cfg.feedback.red_pin, cfg.feedback.buzzer_pin) == (
        27, "GPIO22", 17,
    )  # fmt: skip
    assert cfg.capture.break_pin == 5
    assert cfg.evidence_days == 45
    assert cfg.uplink == UplinkConfig(host="gw.example.be", port=8884)
    assert cfg.key_path == Path("/var/lib/siteclock/terminal.key")
    assert cfg.outbox_path == Path("/var/lib/siteclock/outbox.db")


def test_direction_shift_and_language_are_site_settings(tmp_path) -> None:
    default = load(write(tmp_path, GOOD))
    assert (default.capture.direction, default.feedback.language) == ("inferred", "en")
    text = GOOD.replace("break_pin = 5", 'direction = "out"\nshift_calendar_day = true')
    cfg = load(write(tmp_path, text.replace("green_pin = 27", 'language = "fr"')))
    assert (cfg.capture.direction, cfg.capture.shift_calendar_day) == ("out", True)
    assert cfg.feedback.language == "fr"


def test_uplink_is_optional(tmp_path) -> None:
    text = GOOD.split("[uplink]")[0]
    assert load(write(tmp_path, text)).uplink is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace('spec = "sim:/run/siteclock/taps.sock"', ""), "reader.spec"),
        (GOOD.replace("port = 8884", 'port = "high"'), "uplink.port"),
        (GOOD.replace("green_pin = 27", "green_pin = true"), "feedback.green_pin"),
        (GOOD.replace("[capture]", "[capture]\ncolour = 1"), "capture.colour"),
        (GOOD.replace('"t-0001"', '"T 1"'), "terminal_id"),
        (GOOD.replace('"ABCDEFGH12345"', '"SHORT"'), "workplace"),
        (GOOD + "\nevidence_days = 0\n", None),  # after a table: becomes uplink.evidence_days
        (GOOD.replace("port = 8884", "port = 8884\nheartbeat_s = 0"), "uplink.heartbeat_s"),
        (
            GOOD.replace("break_pin = 5", 'break_windows = ["12:00-13:00", "noon"]'),
            "capture.break_windows[1]",
        ),
        (GOOD.replace("break_pin = 5", 'direction = "sideways"'), "capture.direction"),
        (GOOD.replace("break_pin = 5", "shift_gap_h = 0"), "capture.shift_gap_h"),
        (GOOD.replace("green_pin = 27", 'language = "es"'), "feedback.language"),
    ],
)
def test_broken_files_name_the_key_and_the_file(tmp_path, text, key) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    if key is not None:
        assert info.value.key == key
        assert key in str(info.value)


def test_bad_toml_and_missing_file_name_the_file(tmp_path) -> None:
    path = write(tmp_path, "terminal_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- key file


def test_key_is_created_private_and_loaded_again(tmp_path) -> None:
    path = tmp_path / "terminal.key"
    signer = identity.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(path.read_bytes()) == 32
    assert identity.public_path(path).read_text().strip() == signer.public_key_bytes().hex()
    again = identity.load_or_create(path)
    assert again.kid == signer.kid
    assert again.public_key_bytes() == signer.public_key_bytes()


def test_key_readable_by_others_is_refused(tmp_path) -> None:
    path = tmp_path / "terminal.key"
    identity.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(identity.KeyFileInsecure, match="chmod 600"):
        identity.load_or_create(path)


def test_truncated_key_is_refused(tmp_path) -> None:
    path = tmp_path / "terminal.key"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(identity.KeyFileInvalid, match="5 bytes"):
        identity.load(path)
