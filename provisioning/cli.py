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

workers:
  add | import | link-badge | block-badge | list

Every command exits 0 on success, 1 when the operation failed, 2 on bad input.

Secrets (an enrolment token, an INSS) are never taken as command-line arguments, which every
user of the host can read in ``ps`` and which stay in shell history: they are read from a file
(``--token-file``, ``--inss-file``), an environment variable (``SITECLOCK_TOKEN``,
``SITECLOCK_INSS``), or asked for without echo.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from siteclock.provisioning.gateway import commands as gateway_side
from siteclock.provisioning.gateway.workers import WorkerError
from siteclock.provisioning.shared.cli_args import (
    DEFAULT_DATA_DIR,
    binding_args,
    read_secret,
    secret_args,
    usage_error,
)
from siteclock.provisioning.shared.workplace import WorkplaceError
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
    try:
        return int(args.func(args))
    except (WorkplaceError, ValueError) as exc:
        return usage_error(str(exc))


# --------------------------------------------------------------------------- workers


def read_badge(spec: str, timeout_s: float = 60.0) -> str:
    """Enrolment mode: open a reader and return the first badge tapped on it."""
    from siteclock import hw
    from siteclock.provisioning.terminal.selftest import check_reader

    reader = hw.open_reader(spec)
    check, badge = check_reader(reader, spec, timeout_s)
    if badge is None:
        raise WorkerError(f"no badge read: {check.detail}")
    return badge


def _workers(args: argparse.Namespace) -> Any:
    from siteclock.gateway.registry import Registry
    from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key

    db = Path(args.db)
    from siteclock.gateway.config import DEFAULT_INSS_KEY

    registry = Registry(db, args.inss_key or DEFAULT_INSS_KEY)
    ref_key = args.ref_key or DEFAULT_INSS_KEY.with_name("worker-ref.key")
    ref_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Workers(registry, load_or_create_ref_key(ref_key))


def _w_add(args: argparse.Namespace) -> int:
    from siteclock.provisioning.gateway.workers import validate_row

    inss = read_secret(args, "inss", "the worker's INSS")
    row = validate_row({
        "inss": inss, "name": args.name, "employer": args.employer,
        "capacity": args.capacity, "badge": args.badge or "", "workplace": args.workplace or "",
    })  # fmt: skip
    ref = _workers(args).add(row)
    print(f"worker {ref} ({row.name}) saved")
    return 0


def _w_import(args: argparse.Namespace) -> int:
    report = _workers(args).import_csv(Path(args.file).read_text(encoding="utf-8-sig"))
    print(report.text())
    return 0 if not report.rejected else 1


def _w_link(args: argparse.Namespace) -> int:
    from siteclock.provisioning.cli import read_badge

    if args.at is not None:
        import time

        from siteclock.provisioning.gateway.badge_enrolment import link_next_tap

        badge = link_next_tap(
            Path(args.db), _workers(args), worker_ref=args.worker, terminal_id=args.at,
            since_ns=time.time_ns(), timeout_s=args.timeout,
            on_waiting=lambda: print(f"tap the new badge on terminal {args.at} …", flush=True),
        )  # fmt: skip
        print(f"badge {badge} linked to {args.worker} (the enrolment tap is not sent to the NSSO)")
        return 0
    uid = args.uid
    if uid is None:
        print(f"tap the badge on the reader {args.tap} …")
        uid = read_badge(args.tap, args.timeout)
    badge = _workers(args).link_badge(uid, args.worker)
    print(f"badge {badge} linked to {args.worker}")
    return 0


def _w_block(args: argparse.Namespace) -> int:
    badge = _workers(args).block_badge(args.uid)
    print(f"badge {badge} blocked")
    return 0


def _w_list(args: argparse.Namespace) -> int:
    for entry in _workers(args).registry.roster_for(args.workplace):
        state = "blocked" if entry.blocked else "active"
        print(f"{entry.badge}\t{entry.worker}\t{entry.name}\t{state}")
    return 0


def workers_cli(argv: list[str]) -> int:
    from siteclock.provisioning.gateway.workers import WorkerError

    parser = argparse.ArgumentParser(prog="siteclock workers", description="workers and badges")
    parser.add_argument("--db", required=True, type=Path, help="the gateway's SQLite file")
    parser.add_argument(
        "--inss-key", type=Path, help="default /etc/siteclock/keys/inss.key (not beside --db)"
    )
    parser.add_argument(
        "--ref-key", type=Path, help="default /etc/siteclock/keys/worker-ref.key (not beside --db)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add or update one worker")
    secret_args(add, "inss", "the worker's INSS")
    for name in ("name", "employer"):
        add.add_argument(f"--{name}", required=True)
    add.add_argument("--capacity", default="employee")
    add.add_argument("--badge")
    add.add_argument("--workplace")
    add.set_defaults(func=_w_add)
    imp = sub.add_parser(
        "import", help="import a CSV: inss,name,employer,capacity[,badge,workplace]"
    )
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=_w_import)
    link = sub.add_parser("link-badge", help="link a badge (typed UID or tapped) to a worker")
    link.add_argument("--worker", required=True, help="worker reference (w-...)")
    how = link.add_mutually_exclusive_group(required=True)
    how.add_argument("--uid", help="the badge UID, e.g. 04A1B2C3")
    how.add_argument("--tap", help="reader spec in enrolment mode, e.g. tty:AMA0:pn532")
    how.add_argument(
        "--at", metavar="TERMINAL",
        help="the next new badge tapped on this terminal (already on the wall, online)",
    )  # fmt: skip
    link.add_argument("--timeout", type=float, default=60.0)
    link.set_defaults(func=_w_link)
    block = sub.add_parser("block-badge", help="block a lost badge")
    block.add_argument("uid")
    block.set_defaults(func=_w_block)
    lst = sub.add_parser("list", help="a workplace's roster (never shows an INSS)")
    lst.add_argument("--workplace", required=True)
    lst.set_defaults(func=_w_list)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (WorkerError, WorkplaceError, ValueError) as exc:
        return usage_error(str(exc))


__all__ = ["provision_cli", "read_secret", "workers_cli"]
