"""Test helper: a terminal's TOML configuration for a sim reader and a feedback journal.

Tests that run a real terminal (in-process ``Terminal`` or the ``siteclock terminal``
process) need the same file: the simulated reader listening on a Unix socket, feedback written
to a JSON-lines journal, GPIO on gpiozero's mock pins. They differ only in the values below.
"""

from __future__ import annotations

from pathlib import Path

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
