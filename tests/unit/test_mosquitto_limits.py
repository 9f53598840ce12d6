"""The broker's file-descriptor drop-in: a valid systemd [Service] section whose limit covers
the terminals one broker is measured with (one descriptor each) and the broker's own files."""

from __future__ import annotations

import configparser
from pathlib import Path

from bench.bench_scale import GOALS

DROP_IN = Path(__file__).resolve().parents[2] / "hw" / "pi" / "mosquitto-limits.conf"


def test_the_drop_in_gives_mosquitto_a_descriptor_per_terminal_and_room() -> None:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep case
    parser.read_string(DROP_IN.read_text())
    assert parser.sections() == ["Service"]
    limit = int(parser["Service"]["LimitNOFILE"])
    terminals = GOALS["terminals"][1]
    assert limit >= 2 * terminals  # headroom for reconnect storms (old sockets not yet closed)
