"""``siteclock provision …`` (installer) and ``siteclock workers …`` (employer).

provision:
  token create   employer, on the gateway: a one-time enrolment token for one workplace
  serve          gateway: the HTTPS enrolment endpoint (token-authenticated)
  run            installer, on the terminal: key, enrolment, config, self-test, label
  rebind         installer, on the terminal: move it to another workplace (confirmed)
  rotate-key     on the terminal: new signing key, overlapping the old one
  decommission   employer, on the gateway: disable a terminal, revoke its broker login
  locations      employer, on the gateway: a workplace's location and conflicting ones
  label          on the terminal: (re)write the QR-code label

  token list     employer, on the gateway: every token, its workplace, state and expiry
  token revoke   employer, on the gateway: revoke a token not used yet
  terminals list employer, on the gateway: every terminal, its workplace, status and keys

workers:
  add | import | link-badge | block-badge | unblock-badge | remove | assign | list | workplace

Every command exits 0 on success, 1 when the operation failed, 2 on bad input.

Secrets (an enrolment token, an INSS) are never taken as command-line arguments, which every
user of the host can read in ``ps`` and which stay in shell history: they are read from a file
(``--token-file``, ``--inss-file``), an environment variable (``SITECLOCK_TOKEN``,
``SITECLOCK_INSS``), or asked for without echo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from siteclock.provisioning.gateway import commands as gateway_side
from siteclock.provisioning.gateway import workers_commands
from siteclock.provisioning.gateway.workers_csv import WorkerError
from siteclock.provisioning.shared.cli_args import (
    DEFAULT_DATA_DIR,
    binding_args,
    guarded,
    read_secret,
    secret_args,
)
from siteclock.provisioning.terminal import commands as terminal_side


def provision_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="siteclock provision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", help="enrolment tokens (employer, on the gateway)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a one-time token for one workplace")
    create.add_argument("--db", required=True, type=Path)
    create.add_argument("--workplace", required=True)
    create.add_argument("--ttl-hours", type=float, default=24.0)
    create.add_argument("--by", default="", help="who created it (kept with the token)")
    create.add_argument("--note", default="")
    create.add_argument("--broker-dir", type=Path, help="to print the site CA fingerprint")
    create.add_argument("--broker-host")
    create.add_argument("--gateway-url")
    create.set_defaults(func=gateway_side.token_create)
    tokens = token_sub.add_parser("list", help="every token: workplace, state, expiry")
    tokens.add_argument("--db", required=True, type=Path)
    tokens.add_argument("--workplace", help="only this workplace's tokens")
    tokens.set_defaults(func=gateway_side.token_list)
    revoke = token_sub.add_parser("revoke", help="revoke an unused token (id from 'token list')")
    revoke.add_argument("--db", required=True, type=Path)
    revoke.add_argument("id", help="the token's id (first characters, from 'token list')")
    revoke.add_argument("--by", default="", help="who revokes it (kept with the token)")
    revoke.set_defaults(func=gateway_side.token_revoke)

    terminals = sub.add_parser("terminals", help="terminals (employer, on the gateway)")
    terminals_sub = terminals.add_subparsers(dest="terminals_command", required=True)
    listing = terminals_sub.add_parser("list", help="every terminal: workplace, status, keys")
    listing.add_argument("--db", required=True, type=Path)
    listing.set_defaults(func=gateway_side.terminals_list)

    serve = sub.add_parser("serve", help="run the HTTPS enrolment endpoint (gateway)")
    gateway_side.gateway_args(serve)
    serve.add_argument("--listen", default="0.0.0.0:8443")
    serve.add_argument("--gateway-keys-file", type=Path)
    serve.set_defaults(func=gateway_side.serve)

    run = sub.add_parser("run", help="provision this terminal (installer)")
    run.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    run.add_argument("--terminal-id", required=True)
    binding_args(run)
    run.add_argument("--gateway", required=True, help="https://<gateway>:8443")
    secret_args(run, "token", "the enrolment token")
    run.add_argument("--ca-fingerprint")
    run.add_argument("--ca-file", type=Path)
    run.add_argument("--broker-host", help="override the broker host the gateway names")
    run.add_argument("--reader", default="tty:AMA0:pn532")
    run.add_argument("--site-name", default="")
    run.add_argument("--pin-factory", help="'mock' to run without GPIO")
    run.add_argument("--badge-timeout", type=float, default=60.0)
    run.add_argument("--no-selftest", action="store_true")
    run.add_argument(
        "--skip-check", action="append", default=[], choices=("reader", "gateway", "broker"),
        help="a check before enrolment whose FAIL may not stop the run (repeatable)",
    )  # fmt: skip
    run.add_argument("--no-service", action="store_true", help="do not stop/start systemd")
    run.set_defaults(func=terminal_side.run)

    rebind = sub.add_parser("rebind", help="move this terminal to another workplace")
    rebind.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    binding_args(rebind)
    rebind.add_argument("--gateway", required=True)
    secret_args(rebind, "token", "a token for the NEW workplace")
    rebind.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    rebind.add_argument("--yes", action="store_true", help="confirm without asking")
    rebind.add_argument("--no-service", action="store_true")
    rebind.set_defaults(func=terminal_side.rebind_command)

    rotate = sub.add_parser("rotate-key", help="replace this terminal's signing key")
    rotate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    rotate.add_argument("--gateway", required=True)
    rotate.add_argument("--no-service", action="store_true", help="do not stop/start systemd")
    rotate.add_argument(
        "--drain-timeout", type=float, default=120.0,
        help="seconds to wait for the old key's queued events to be delivered (then rerun)",
    )  # fmt: skip
    rotate.set_defaults(func=terminal_side.rotate)

    places = sub.add_parser("locations", help="a workplace's location and conflicting ones")
    places.add_argument("--db", required=True, type=Path, help="the gateway's SQLite file")
    places.add_argument("--workplace", required=True)
    places.add_argument("--inss-key", type=Path, help="default /etc/siteclock/keys/inss.key")
    places.set_defaults(func=gateway_side.locations)

    decom = sub.add_parser("decommission", help="disable a terminal and revoke its login")
    gateway_side.gateway_args(decom)
    decom.add_argument("--terminal", required=True)
    decom.add_argument("--yes", action="store_true")
    decom.set_defaults(func=gateway_side.decommission)

    label = sub.add_parser("label", help="write the terminal's QR-code label")
    label.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    label.add_argument("--out", type=Path, help=".svg (QR and text) or .png (QR only)")
    label.add_argument("--site-name", default="")
    label.set_defaults(func=terminal_side.label)

    args = parser.parse_args(argv)
    return guarded(lambda: int(args.func(args)))


def read_badge(spec: str, timeout_s: float = 60.0) -> str:
    """Enrolment mode: open a reader and return the first badge tapped on it."""
    from siteclock import hw
    from siteclock.provisioning.terminal.selftest import check_reader

    reader = hw.open_reader(spec)
    check, badge = check_reader(reader, spec, timeout_s)
    if badge is None:
        raise WorkerError(f"no badge read: {check.detail}")
    return badge


def workers_cli(argv: list[str]) -> int:
    """``siteclock workers ...`` (see provisioning.gateway.workers_commands)."""
    return workers_commands.workers_cli(argv, read_badge=read_badge)


__all__ = ["provision_cli", "read_badge", "read_secret", "workers_cli"]
