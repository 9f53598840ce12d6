"""``siteclock gateway --config PATH``: run the gateway's intake until SIGTERM/SIGINT.

Opens the gateway's SQLite file (inbox + terminal registry), loads or creates the gateway's
roster-signing key (0600) and writes its public half for terminals, then runs :class:`Intake`.
The broker may be down at start: paho keeps retrying in the background, and terminals keep
their events until the gateway acknowledges them, so nothing waits on anything.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.intake import Intake
from gateway.roster import write_gateway_keys
from gateway.store import Inbox
from gateway.terminals import TerminalRegistry
from siteclock import log as sclog
from siteclock.config import ConfigError, load
from siteclock.log import fields
from terminal.identity import IdentityError, load_or_create

log = logging.getLogger("siteclock.gateway")


def build(cfg: GatewayConfig) -> Intake:
    """Everything the intake needs, from the configuration; not yet connected."""
    signer = load_or_create(cfg.signing_key_file)
    if cfg.gateway_keys_file is not None:
        write_gateway_keys(cfg.gateway_keys_file, [signer])
    return Intake(
        cfg.mqtt, inbox=Inbox(cfg.db), registry=TerminalRegistry(cfg.db), roster_signer=signer
    )


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock gateway", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, GatewayConfig)
    except ConfigError as exc:
        print(f"siteclock gateway: {exc}", file=sys.stderr)
        return 2
    sclog.setup(cfg.log_level)
    try:
        intake = build(cfg)
    except (IdentityError, OSError) as exc:
        print(f"siteclock gateway: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    intake.start(wait_s=None)
    log.info("gateway running", extra=fields(db=cfg.db, broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}"))
    while not stop.wait(60.0):
        log.info("intake counters", extra=fields(**intake.stats, **intake.counters))
    intake.stop()
    log.info("gateway stopped")
    return 0
