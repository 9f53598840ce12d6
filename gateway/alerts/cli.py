"""``siteclock alerts``: the employer's alerts on the command line, and a check of their delivery.

* ``siteclock alerts list --config gateway.toml [--all]``: open alerts (or every alert), newest
  first, with their resolution;
* ``siteclock alerts test --config gateway.toml``: send one test message through the Apprise
  URLs of ``[alerts] urls_file`` and say whether every URL took it (exit 1 and the cause if not),
  so an installer knows alerts will reach someone before the first real one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siteclock.config import ConfigError, load
from siteclock.gateway.alerts.delivery import AppriseChannel
from siteclock.gateway.alerts.rules import at
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.db import SQLiteGatewayDB


def _list(cfg: GatewayConfig, show_all: bool) -> int:
    db = SQLiteGatewayDB(cfg.db)
    try:
        rows = db.alerts_list(open_only=not show_all, limit=1000)
    finally:
        db.close()
    for row in rows:
        print(f"{at(row['raised_ns'])}  {row['kind']:<16} {row['message']}")
        if row["resolved_ns"] is not None:
            by = f" by {row['resolved_by']}" if row["resolved_by"] else ""
            print(f"{'':>25} resolved {at(row['resolved_ns'])}{by}: {row['resolution']}")
    if not rows:
        print("no open alerts" if not show_all else "no alerts")
    return 0


def _test(cfg: GatewayConfig) -> int:
    if cfg.alerts.urls_file is None:
        print("siteclock alerts: no [alerts] urls_file in the config: alerts are shown in the "
              "console only (docs/alerts.md)", file=sys.stderr)  # fmt: skip
        return 1
    channel = AppriseChannel(cfg.alerts.urls)
    body = ("This is a test of siteclock's alerts: if you read it, alerts reach you.\n"
            + cfg.alerts.console_url.rstrip("/") + "/alerts/")  # fmt: skip
    if channel.send("siteclock alert test", body, resolved=False):
        print(f"test message sent through every URL of {cfg.alerts.urls_file}")
        return 0
    print(f"siteclock alerts: not sent: {channel.last_error}", file=sys.stderr)
    return 1


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock alerts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="open alerts, newest first")
    listing.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    listing.add_argument("--all", action="store_true", help="resolved ones too")
    test = sub.add_parser("test", help="send a test message through the Apprise URLs")
    test.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, GatewayConfig)
    except ConfigError as exc:
        print(f"siteclock alerts: {exc}", file=sys.stderr)
        return 2
    if args.command == "list":
        return _list(cfg, args.all)
    return _test(cfg)
