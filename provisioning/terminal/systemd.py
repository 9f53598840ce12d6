"""Stopping and starting the terminal's systemd unit around provisioning steps."""

from __future__ import annotations

import shutil
import subprocess


class ServiceControl:
    """Stops and starts the terminal's systemd unit around provisioning (reader ownership)."""

    def __init__(self, unit: str = "siteclock-terminal.service", *, enabled: bool = True) -> None:
        self.unit = unit
        self.enabled = enabled and shutil.which("systemctl") is not None

    def _run(self, verb: str) -> None:
        if self.enabled:
            subprocess.run(["systemctl", verb, self.unit], check=False, timeout=60)

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("restart")
