"""Test helper: a terminal's TOML configuration for a sim reader and a feedback journal.

Tests that run a real terminal (in-process ``Terminal`` or the ``siteclock terminal``
process) need the same file: the simulated reader listening on a Unix socket, feedback written
to a JSON-lines journal, GPIO on gpiozero's mock pins. They differ only in the values below.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path

from siteclock.hw import sim

WORKPLACE = "ABCDEFGH12345"


def write_terminal_config(
    root: Path,
    *,
    terminal_id: str,
    socket: Path,
    repeat_window_s: float,
    data_dir: Path | None = None,
    extra: str = "",
) -> Path:
    """Write ``root/terminal.toml`` and return its path.

    Data (the outbox) goes in ``data_dir`` (default ``root/data``), the journal in
    ``root/journal.jsonl``; ``extra`` is TOML inserted before the ``[reader]`` table.
    """
    path, data, journal = root / "terminal.toml", data_dir or root / "data", root / "journal.jsonl"
    path.write_text(
        f"""
terminal_id = "{terminal_id}"
workplace = "{WORKPLACE}"
data_dir = "{data}"
{extra}
[reader]
spec = "sim:{socket}"
repeat_window_s = {repeat_window_s!r}

[feedback]
journal = "{journal}"
pin_factory = "mock"
"""
    )
    return path


__all__ = ["WORKPLACE", "write_terminal_config"]


def answered(journal: Path) -> list[dict]:
    """The feedback journal's complete lines; a line torn by a kill or a power cut told no
    one, so it is left out."""
    if not journal.exists():
        return []
    out = []
    for line in journal.read_text().splitlines():
        with suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def tap_burst(sock: Path, badges: list[str]) -> None:
    """Tap one badge per connection to the simulated reader, as fast as the reader takes them,
    until the terminal goes (killed, or the power cut): expected, so it just stops."""
    for badge in badges:
        try:
            sim.send_taps(str(sock), [badge], timeout=2)
        except OSError:
            return
