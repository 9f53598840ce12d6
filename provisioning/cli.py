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
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock.provisioning.workplace import (
    Address,
    Coordinates,
    WorkplaceBinding,
    WorkplaceError,
    parse_workplace_input,
)

DEFAULT_DATA_DIR = Path("/var/lib/siteclock")


def _err(message: str) -> int:
    from siteclock.log import redact

    print(f"siteclock: {redact(message)}", file=sys.stderr)
    return 2


class _RefusedSecret(argparse.Action):
    """``--token X`` / ``--inss X``: refused with the way to give it instead."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        name = self.dest
        parser.error(
            f"--{name} is not accepted on the command line (ps and shell history would keep "
            f"it): use --{name}-file FILE, set SITECLOCK_{name.upper()}, or leave it out to be "
            "asked"
        )


def _secret_args(p: argparse.ArgumentParser, name: str, what: str) -> None:
    p.add_argument(f"--{name}", action=_RefusedSecret, nargs="?", help=argparse.SUPPRESS)
    p.add_argument(
        f"--{name}-file", type=Path,
        help=f"file holding {what} (or set SITECLOCK_{name.upper()}, or be asked)",
    )  # fmt: skip


def read_secret(args: argparse.Namespace, name: str, what: str) -> str:
    """``what`` from ``--<name>-file``, else ``SITECLOCK_<NAME>``, else a prompt without echo."""
    path = getattr(args, f"{name}_file", None)
    if path is not None:
        value = Path(path).read_text(encoding="utf-8").strip()
    elif os.environ.get(f"SITECLOCK_{name.upper()}"):
        value = os.environ[f"SITECLOCK_{name.upper()}"].strip()
    elif sys.stdin.isatty():
        value = getpass.getpass(f"{what}: ").strip()
    else:
        raise ValueError(f"no {what}: give --{name}-file or set SITECLOCK_{name.upper()}")
    if not value:
        raise ValueError(f"{what} is empty")
    return value


def _binding(args: argparse.Namespace) -> WorkplaceBinding:
    reference = parse_workplace_input(args.workplace)
    coords = Coordinates.parse(args.coordinates) if args.coordinates else None
    address = None
    if args.street:
        address = Address(
            args.street, args.house_number or "", args.post_code or "", args.municipality or "",
            args.box or "",
        )  # fmt: skip
    return WorkplaceBinding(reference, coords, address)


def _workplace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workplace", required=True, help="DoW reference or its QR-code URL")
    p.add_argument("--coordinates", help="'latitude, longitude' of the workplace")
    p.add_argument("--street")
    p.add_argument("--house-number")
    p.add_argument("--box")
    p.add_argument("--post-code")
    p.add_argument("--municipality")


# --------------------------------------------------------------------------- gateway side


def _service(args: argparse.Namespace) -> Any:
    from siteclock.gateway.pki import ensure_site_pki
    from siteclock.gateway.registry import Registry
    from siteclock.gateway.terminals import TerminalRegistry
    from siteclock.provisioning.enrolment import (
        BrokerAccounts,
        BrokerEndpoint,
        EnrolmentService,
        TokenStore,
        pid_file_reloader,
    )

    broker_dir = Path(args.broker_dir)
    pki = ensure_site_pki(broker_dir / "pki", [args.broker_host])
    reload: Callable[[], None] = (
        pid_file_reloader(Path(args.reload_pid_file)) if args.reload_pid_file else lambda: None
    )
    keys = {}
    if getattr(args, "gateway_keys_file", None):
        keys = json.loads(Path(args.gateway_keys_file).read_text())
    from siteclock.gateway.config import DEFAULT_INSS_KEY

    inss_key = Path(args.inss_key) if args.inss_key else DEFAULT_INSS_KEY
    return EnrolmentService(
        TokenStore(args.db),
        TerminalRegistry(args.db),
        BrokerAccounts(broker_dir / "passwd", reload),
        endpoint=BrokerEndpoint(args.broker_host, args.broker_port, pki.ca_cert.read_text()),
        gateway_keys=keys,
        workplaces=Registry(args.db, inss_key),
    ), pki


def _gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, type=Path, help="the gateway's SQLite file")
    p.add_argument("--broker-dir", required=True, type=Path, help="broker-config directory")
    p.add_argument("--broker-host", required=True, help="broker name terminals connect to")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--reload-pid-file", type=Path, help="Mosquitto pid file (SIGHUP reload)")
    p.add_argument(
        "--inss-key", type=Path, help="INSS key file (default /etc/siteclock/keys/inss.key)"
    )


def _token_create(args: argparse.Namespace) -> int:
    from siteclock.gateway.pki import ensure_site_pki
    from siteclock.provisioning.enrolment import TokenStore
    from siteclock.provisioning.http import ca_fingerprint

    issued = TokenStore(args.db).create(
        args.workplace, ttl_s=args.ttl_hours * 3600, created_by=args.by, note=args.note
    )
    fingerprint = ""
    if args.broker_dir:
        pki = ensure_site_pki(Path(args.broker_dir) / "pki", [args.broker_host or "localhost"])
        fingerprint = ca_fingerprint(pki.ca_cert.read_text())
    print(f"enrolment token for {issued.workplace}: {issued.token}")
    print(f"valid until {issued.expires_ns // 10**9} (unix time), single use")
    if fingerprint:
        print(f"site CA fingerprint: {fingerprint}")
    print("installer, on the terminal (it asks for the token; or SITECLOCK_TOKEN / --token-file):")
    print(
        f"  siteclock provision run --workplace {issued.workplace} "
        f"--gateway {args.gateway_url or 'https://<gateway>:8443'} "
        f"--ca-fingerprint {fingerprint or '<fingerprint>'} "
        "--terminal-id <id> --coordinates '<lat>, <lon>' --reader tty:AMA0:pn532"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from siteclock.provisioning.http import create_app, serve_tls

    service, pki = _service(args)
    host, _, port = args.listen.rpartition(":")
    app = create_app(service, ca_pem=pki.ca_cert.read_text())
    server = serve_tls(app, host or "0.0.0.0", int(port), pki.server_cert, pki.server_key)
    # Flushed: under systemd or a pipe, stdout is block-buffered and the line would not show.
    print(f"enrolment endpoint on https://{host or '0.0.0.0'}:{server.port}", flush=True)
    stop = threading.Event()
    # systemd stops a service with SIGTERM: shut down as cleanly as on Ctrl-C.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
    print("enrolment endpoint stopped", flush=True)
    return 0


def _locations(args: argparse.Namespace) -> int:
    """The workplace's location and the different ones terminals' installers typed."""
    from siteclock.gateway.config import DEFAULT_INSS_KEY
    from siteclock.gateway.registry import Registry
    from siteclock.provisioning.enrolment import TokenStore
    from siteclock.provisioning.workplace import parse_reference

    reference = parse_reference(args.workplace)
    site = Registry(args.db, args.inss_key or DEFAULT_INSS_KEY).workplace(reference)
    if site is None:
        print(f"{reference}: no location yet (the first enrolment that names it sets it)")
    else:
        print(f"{reference}: {site.latitude}, {site.longitude} {site.address or ''}".rstrip())
    conflicts = TokenStore(args.db).location_conflicts(reference)
    for c in conflicts:
        where = f"{c['latitude']}, {c['longitude']} {c['address'] or ''}".rstrip()
        print(f"  not applied: {where} (given by {c['terminal']} at {c['at_ns'] // 10**9})")
    if conflicts:
        print("the site's location was kept; if one of these is right, correct the workplace")
    return 0


def _decommission(args: argparse.Namespace) -> int:
    from siteclock.provisioning.enrolment import EnrolmentRefused
    from siteclock.provisioning.lifecycle import Lifecycle

    confirmed = args.yes or _confirm(f"decommission terminal {args.terminal}", args.terminal)
    service, _ = _service(args)
    try:
        Lifecycle(service).decommission(args.terminal, confirm=confirmed)
    except EnrolmentRefused as exc:
        return _err(str(exc))
    print(f"terminal {args.terminal} decommissioned: disabled, broker login removed")
    return 0


def _confirm(what: str, expected: str) -> bool:
    """Ask the person to retype ``expected``: a yes/no prompt is too easy to click through."""
    if not sys.stdin.isatty():
        return False
    answer = input(f"{what}? Type {expected} to confirm: ")
    return answer.strip().upper() == expected.upper()


# --------------------------------------------------------------------------- terminal side


def _run(args: argparse.Namespace) -> int:
    from siteclock.provisioning.installer import Installer, ProvisionOptions, ServiceControl

    opts = ProvisionOptions(
        data_dir=args.data_dir,
        terminal_id=args.terminal_id,
        workplace=_binding(args),
        gateway_url=args.gateway,
        token=read_secret(args, "token", "enrolment token"),
        reader_spec=args.reader,
        ca_fingerprint=args.ca_fingerprint,
        ca_file=args.ca_file,
        broker_host=args.broker_host,
        site_name=args.site_name,
        pin_factory=args.pin_factory,
        badge_timeout_s=args.badge_timeout,
        selftest=not args.no_selftest,
    )
    service = ServiceControl(enabled=not args.no_service)
    return Installer(opts, service=service).run()


def _rebind(args: argparse.Namespace) -> int:
    from siteclock.provisioning.installer import ServiceControl, rebind

    binding = _binding(args)
    confirmed = args.yes or _confirm(
        f"move this terminal to {binding.reference}", binding.reference
    )
    token = read_secret(args, "token", "enrolment token for the new workplace")
    return rebind(
        args.data_dir, workplace=binding, token=token, reason=args.reason,
        gateway_url=args.gateway, confirm=confirmed,
        service=ServiceControl(enabled=not args.no_service),
    )  # fmt: skip


def _rotate(args: argparse.Namespace) -> int:
    from siteclock.provisioning.installer import ServiceControl, rotate_key

    return rotate_key(
        args.data_dir, gateway_url=args.gateway, drain_timeout_s=args.drain_timeout,
        service=ServiceControl(enabled=not args.no_service),
    )  # fmt: skip


def _label(args: argparse.Namespace) -> int:
    from siteclock.provisioning.label import LabelInfo, write_label
    from siteclock.terminal import config, identity

    cfg = config.load(args.data_dir / "terminal.toml")
    kid = identity.load(cfg.key_path).kid
    out = write_label(args.out or args.data_dir / "label.svg", LabelInfo(
        cfg.terminal_id, cfg.workplace, kid, args.site_name))  # fmt: skip
    print(f"label written: {out}")
    return 0


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
    create.set_defaults(func=_token_create)

    serve = sub.add_parser("serve", help="run the HTTPS enrolment endpoint (gateway)")
    _gateway_args(serve)
    serve.add_argument("--listen", default="0.0.0.0:8443")
    serve.add_argument("--gateway-keys-file", type=Path)
    serve.set_defaults(func=_serve)

    run = sub.add_parser("run", help="provision this terminal (installer)")
    run.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    run.add_argument("--terminal-id", required=True)
    _workplace_args(run)
    run.add_argument("--gateway", required=True, help="https://<gateway>:8443")
    _secret_args(run, "token", "the enrolment token")
    run.add_argument("--ca-fingerprint")
    run.add_argument("--ca-file", type=Path)
    run.add_argument("--broker-host", help="override the broker host the gateway names")
    run.add_argument("--reader", default="tty:AMA0:pn532")
    run.add_argument("--site-name", default="")
    run.add_argument("--pin-factory", help="'mock' to run without GPIO")
    run.add_argument("--badge-timeout", type=float, default=60.0)
    run.add_argument("--no-selftest", action="store_true")
    run.add_argument("--no-service", action="store_true", help="do not stop/start systemd")
    run.set_defaults(func=_run)

    rebind = sub.add_parser("rebind", help="move this terminal to another workplace")
    rebind.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    _workplace_args(rebind)
    rebind.add_argument("--gateway", required=True)
    _secret_args(rebind, "token", "a token for the NEW workplace")
    rebind.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    rebind.add_argument("--yes", action="store_true", help="confirm without asking")
    rebind.add_argument("--no-service", action="store_true")
    rebind.set_defaults(func=_rebind)

    rotate = sub.add_parser("rotate-key", help="replace this terminal's signing key")
    rotate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    rotate.add_argument("--gateway", required=True)
    rotate.add_argument("--no-service", action="store_true", help="do not stop/start systemd")
    rotate.add_argument(
        "--drain-timeout", type=float, default=120.0,
        help="seconds to wait for the old key's queued events to be delivered (then rerun)",
    )  # fmt: skip
    rotate.set_defaults(func=_rotate)

    places = sub.add_parser("locations", help="a workplace's location and conflicting ones")
    places.add_argument("--db", required=True, type=Path, help="the gateway's SQLite file")
    places.add_argument("--workplace", required=True)
    places.add_argument("--inss-key", type=Path, help="default /etc/siteclock/keys/inss.key")
    places.set_defaults(func=_locations)

    decom = sub.add_parser("decommission", help="disable a terminal and revoke its login")
    _gateway_args(decom)
    decom.add_argument("--terminal", required=True)
    decom.add_argument("--yes", action="store_true")
    decom.set_defaults(func=_decommission)

    label = sub.add_parser("label", help="write the terminal's QR-code label")
    label.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    label.add_argument("--out", type=Path, help=".svg (QR and text) or .png (QR only)")
    label.add_argument("--site-name", default="")
    label.set_defaults(func=_label)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (WorkplaceError, ValueError) as exc:
        return _err(str(exc))


# --------------------------------------------------------------------------- workers


def _workers(args: argparse.Namespace) -> Any:
    from siteclock.gateway.registry import Registry
    from siteclock.provisioning.workers import Workers, load_or_create_ref_key

    db = Path(args.db)
    from siteclock.gateway.config import DEFAULT_INSS_KEY

    registry = Registry(db, args.inss_key or DEFAULT_INSS_KEY)
    ref_key = args.ref_key or DEFAULT_INSS_KEY.with_name("worker-ref.key")
    ref_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Workers(registry, load_or_create_ref_key(ref_key))


def _w_add(args: argparse.Namespace) -> int:
    from siteclock.provisioning.workers import validate_row

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
    from siteclock.provisioning.workers import read_badge

    if args.at is not None:
        import time

        from siteclock.provisioning.badge_enrolment import link_next_tap

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
    from siteclock.provisioning.workers import WorkerError

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
    _secret_args(add, "inss", "the worker's INSS")
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
        return _err(str(exc))


__all__ = ["provision_cli", "workers_cli"]
