"""The ``[alerts]`` and ``[health]`` settings of the gateway config (docs/alerts.md)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AlertConfig:
    """``urls_file``: Apprise URLs (``mailtos://…``, ``msteams://…``, ``slack://…``,
    ``json://…``), one a line, ``#`` comments allowed; the file holds secrets (tokens in the
    URLs), so it must be mode 0600. Without it, alerts are shown in the console only.
    ``console_url``: the console's address, the start of every alert's link.
    ``backlog_age_s``: the age of a terminal's oldest unsent event that raises an alert (a
    registration is due in real time). ``disk_low_mb``: free space that raises one.
    ``check_s``: how often the rules run and news is sent. ``storm``: more new alerts of one
    kind than this in one round go out as one summary message."""

    urls_file: Path | None = None
    console_url: str = "https://localhost:8443"
    backlog_age_s: float = 300.0
    disk_low_mb: float = 100.0
    check_s: float = 5.0
    storm: int = 5
    retry_s: float = 30.0
    """The first wait before sending an alert again after Apprise failed to deliver it; the
    wait grows with each failure."""

    def __post_init__(self) -> None:
        if self.check_s <= 0 or self.backlog_age_s <= 0 or self.storm < 1 or self.retry_s <= 0:
            raise ValueError("alerts: check_s, backlog_age_s, retry_s > 0 and storm >= 1")

    def urls(self) -> list[str]:
        """The Apprise URLs, read now (a changed file counts from the next round)."""
        return read_urls(self.urls_file) if self.urls_file else []


class UrlsFileError(ValueError):
    pass


def read_urls(path: Path) -> list[str]:
    """Apprise URLs from a 0600 file, one a line; a wider mode is refused with the fix."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise UrlsFileError(f"alerts.urls_file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise UrlsFileError(
            f"alerts.urls_file {path} is mode {mode:04o}: it holds secrets; chmod 600 it"
        )
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
