"""``siteclock gateway check --config gateway.toml``: the gateway's self-test.

It reads the configuration, logs in to the broker exactly as the gateway does (its own client
id with ``-check`` appended, so a running gateway keeps its session), and, with ``[ciao]``,
opens a connection to the CIaO service. Each line says ``ok`` or ``FAIL`` with the cause and
the next step (:func:`gateway.waits.diagnose_broker`); the exit code is 1 when anything failed,
so an installer (or a monitoring probe) cannot mistake a gateway that waits for one that works.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from siteclock.config import ConfigError, load
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.link import make_client
from siteclock.gateway.waits import diagnose_broker


def broker_login(cfg: GatewayConfig, timeout_s: float) -> tuple[bool, str | None]:
    """(logged in, the broker's refusal if it refused) for the gateway's credentials."""
    mqtt = dataclasses.replace(cfg.mqtt, client_id=cfg.mqtt.client_id + "-check")
    client = make_client(mqtt, manual_ack=False)
    answered = threading.Event()
    outcome: list[str | None] = []

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        failed = getattr(rc, "is_failure", False)
        outcome.append(str(rc) if failed else None)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
    except (OSError, ValueError):
        return False, None
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return bool(outcome) and outcome[0] is None, outcome[0] if outcome else None


def _ciao_line(cfg: GatewayConfig, timeout_s: float) -> tuple[bool, str]:
    if cfg.ciao is None:
        return True, "ciao: no [ciao] section: events are stored and acknowledged, not relayed"
    url = cfg.ciao.base_url
    if not url:
        return True, f"ciao: {cfg.ciao.environment} (no base_url to check from here)"
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        return False, (
            f"ciao: FAIL nothing answers at {url}: {exc.strerror or exc}; next: start the "
            "simulator (siteclock ciao-sim) or fix [ciao] base_url"
        )
    return True, f"ciao: ok {url} answers"


def check(cfg: GatewayConfig, timeout_s: float = 5.0) -> tuple[bool, list[str]]:
    lines: list[str] = []
    healthy = True
    for name, path in (
        ("mqtt.ca_file", cfg.mqtt.ca_file),
        ("mqtt.password_file", cfg.mqtt.password_file),
    ):
        if path is not None and not Path(path).is_file():
            healthy = False
            lines.append(f"{name}: FAIL {path} does not exist")
    if healthy:
        ok, refusal = broker_login(cfg, timeout_s)
        if ok:
            lines.append(f"broker: ok the gateway logs in at {cfg.mqtt.host}:{cfg.mqtt.port}")
        else:
            healthy = False
            wait = diagnose_broker(cfg.mqtt, refusal, timeout_s=timeout_s)
            lines.append(f"broker: FAIL {wait.cause}; next: {wait.next_step}")
    ciao_ok, line = _ciao_line(cfg, timeout_s)
    return healthy and ciao_ok, [*lines, line]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock gateway check", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="keep checking up to this many seconds until it passes (services just started)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, GatewayConfig)
    except ConfigError as exc:
        print(f"siteclock gateway check: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait
    healthy, lines = check(cfg, args.timeout)
    while not healthy and time.monotonic() < deadline:
        time.sleep(1.0)
        healthy, lines = check(cfg, args.timeout)
    for line in lines:
        print(line)
    print("gateway self-test: " + ("passed" if healthy else "FAILED"))
    return 0 if healthy else 1
