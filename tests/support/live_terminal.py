"""Test helper: a real ``siteclock terminal`` process on a real broker, registered with a
gateway, that a test can kill and start again (terminal health, the console's browser test).

Example::

    with running_broker(tmp, terminals=[TID]) as broker:
        term = LiveTerminal(tmp / "t", TID, broker, gateway_keys_file, heartbeat_s=1.0)
        TerminalRegistry(db).register(TID, WORKPLACE, public_key=term.public_key)
        term.start(); term.kill(); term.start(); term.stop()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from siteclock.terminal import identity
from tests.support.mosquitto import MosquittoBroker
from tests.support.terminal_files import WORKPLACE, write_terminal_config
from tests.support.waiting import wait_for

__all__ = ["WORKPLACE", "LiveTerminal"]


class LiveTerminal:
    """One terminal process: its own directory, key, broker password and heartbeat interval."""

    def __init__(
        self,
        root: Path,
        terminal_id: str,
        broker: MosquittoBroker,
        gateway_keys_file: Path,
        *,
        heartbeat_s: float,
    ) -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.root = root
        self.terminal_id = terminal_id
        self.socket = root / "taps.sock"
        self.public_key = identity.load_or_create(root / "data" / "terminal.key").public_key_bytes()
        creds = broker.credentials(terminal_id)
        self.config = write_terminal_config(
            root, terminal_id=terminal_id, socket=self.socket, repeat_window_s=2.0,
            extra=f"""
[uplink]
host = "{broker.host}"
port = {broker.port}
ca_file = "{broker.ca_file}"
password_file = "{creds.password_file}"
gateway_keys_file = "{gateway_keys_file}"
heartbeat_s = {heartbeat_s!r}
resend_after_s = 2.0
""",
        )  # fmt: skip
        self.log = root / "terminal.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until its reader listens (the terminal is up)."""
        self.socket.unlink(missing_ok=True)
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        env.pop("NOTIFY_SOCKET", None)
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "siteclock.cli", "terminal", "--config", str(self.config),
                 "--log-level", "WARNING"],
                env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        process = self.process
        wait_for(
            lambda: self.socket.exists() or process.poll() is not None,
            f"{self.terminal_id} to start",
            timeout=30,
        )
        if process.poll() is not None:
            raise AssertionError(f"terminal exited {process.returncode}:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean offline status; only silence (and, much later, the Last Will)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the process hangs with its connection open, as a terminal whose network
        died silently: only the missing heartbeats tell."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
