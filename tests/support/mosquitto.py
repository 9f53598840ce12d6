"""A real Mosquitto for tests: started on a free port with the project's own generated config.

The broker runs exactly the configuration ``siteclock broker-config`` writes (TLS listener,
``$7$`` password file, ``%u`` ACL), so tests exercise what a site runs. It can be killed with
SIGKILL and restarted on the same port to inject broker crashes.

Example (inside a test module)::

    @pytest.fixture
    def broker(tmp_path):
        with running_broker(tmp_path / "broker", terminals=["t-a", "t-b"]) as b:
            yield b

    creds = broker.credentials("t-a")      # username, password, password_file
    broker.kill(); broker.start()          # crash and come back on the same port
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from siteclock.gateway.broker import GATEWAY_USER, credential_path, write_site
from siteclock.gateway.config import MqttConfig
from siteclock.terminal.config import UplinkConfig
from tests.support.waiting import wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False

    return wait_until(accepts, timeout, interval=0.02)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    password_file: Path


class MosquittoBroker:
    """One Mosquitto process and its generated directory (config, passwd, ACL, PKI)."""

    def __init__(
        self,
        workdir: Path,
        *,
        terminals: Iterable[str] = (),
        persistence: bool = False,
        host: str = "127.0.0.1",
        **settings: object,
    ) -> None:
        """``host``: where both listeners bind (an address inside a test's network namespace,
        say). ``settings``: further :class:`gateway.broker.BrokerSettings` fields (the scale
        benchmark's ``max_terminal_connections``)."""
        self.host = host
        self.settings = settings
        self.workdir = workdir
        self.port = free_port()
        self.gateway_port = free_port()
        """The gateway's own listener (terminals connect to ``port``)."""
        self.terminals = list(terminals)
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        self._write()

    def _write(self, revoke: Iterable[str] = ()) -> None:
        files = write_site(
            self.workdir,
            hostnames=list(dict.fromkeys([self.host, "127.0.0.1", "localhost"])),
            terminals=self.terminals,
            revoke=revoke,
            port=self.port,
            bind_address=self.host,
            gateway_port=self.gateway_port,
            gateway_bind_address=self.host,
            persistence_dir=(self.workdir / "data") if self.persistence else None,
            run_as_user="root" if os.geteuid() == 0 else None,
            **self.settings,
        )
        self.conf, self.ca_file = files.conf, files.pki.ca_cert
        self.share_group = files.share_group
        if self.persistence:
            (self.workdir / "data").mkdir(exist_ok=True)

    # ------------------------------------------------------------------ identities

    def credentials(self, user: str) -> Credentials:
        path = credential_path(self.workdir, user)
        return Credentials(user, path.read_text().strip(), path)

    @property
    def gateway(self) -> Credentials:
        return self.credentials(GATEWAY_USER)

    def add_terminal(self, terminal_id: str) -> Credentials:
        self.terminals.append(terminal_id)
        self._write()
        self.reload()
        return self.credentials(terminal_id)

    def revoke_terminal(self, terminal_id: str) -> None:
        self.terminals.remove(terminal_id)
        self._write(revoke=[terminal_id])
        self.reload()

    # ------------------------------------------------------------------ process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if wait_for_port(self.host, self.port, timeout=0.2) and wait_for_port(
                self.host, self.gateway_port, timeout=0.2
            ):
                return
        raise RuntimeError(f"mosquitto did not start; log:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the broker loses every in-memory session and queued message."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def reload(self) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.2)  # Mosquitto rereads the files in its main loop

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_broker(
    workdir: Path, *, terminals: Iterable[str] = (), persistence: bool = False
) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(workdir, terminals=terminals, persistence=persistence)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ---------------------------------------------------------------------- client configurations


def terminal_config(broker: MosquittoBroker, terminal_id: str, **overrides: object) -> UplinkConfig:
    """An ``UplinkConfig`` that connects ``terminal_id`` to this broker over TLS."""
    creds = broker.credentials(terminal_id)
    values: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "tls": True,
        "ca_file": broker.ca_file,
        "username": terminal_id,
        "password_file": creds.password_file,
        "heartbeat_s": 5.0,
        "resend_after_s": 2.0,
    }
    values.update(overrides)
    return UplinkConfig(**values)  # type: ignore[arg-type]


def gateway_config(broker: MosquittoBroker, **overrides: object) -> MqttConfig:
    """The gateway's ``MqttConfig`` for this broker over TLS, on the gateway's own listener
    (a unique client id per call, starting with ``siteclock`` as every gateway's must)."""
    values: dict[str, object] = {
        "host": broker.host,
        "port": broker.gateway_port,
        "tls": True,
        "ca_file": broker.ca_file,
        "username": GATEWAY_USER,
        "password_file": broker.gateway.password_file,
        "client_id": "siteclock_gateway-" + secrets.token_hex(4),
        "keepalive_s": 10,
    }
    values.update(overrides)
    return MqttConfig(**values)  # type: ignore[arg-type]


def write_gateway_toml(root: Path, broker: MosquittoBroker, client_id: str, **mqtt: int) -> Path:
    """``root/gateway.toml`` for a gateway process (``siteclock gateway --config``) on this
    broker's gateway listener: database and keys under ``root``, quiet logs, ``client_id`` (which
    the caller finds in the broker's log) and any further ``[mqtt]`` integers in ``mqtt``."""
    path = root / "gateway.toml"
    path.write_text(
        f'db = "{root / "gateway.db"}"\n'
        f'signing_key_file = "{root / "gateway-signing.key"}"\n'
        f'inss_key_file = "{root / "inss.key"}"\n'
        'log_level = "WARNING"\n'
        "[mqtt]\n"
        f'host = "{broker.host}"\nport = {broker.gateway_port}\n'
        f'ca_file = "{broker.ca_file}"\n'
        f'password_file = "{broker.gateway.password_file}"\n'
        f'client_id = "{client_id}"\n'
        + "".join(f"{key} = {value}\n" for key, value in mqtt.items())
    )
    return path
