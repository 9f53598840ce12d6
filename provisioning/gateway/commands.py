"""The gateway side's ``siteclock provision`` commands: token create, serve, locations,
decommission.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock.provisioning.gateway.key_files import keys_belong_to
from siteclock.provisioning.shared.cli_args import (
    confirm,
    db_folder,
    existing_db,
    local_and_utc,
    usage_error,
)


def enrolment_service(args: argparse.Namespace) -> Any:
    from siteclock.gateway.pki import ensure_site_pki
    from siteclock.gateway.registry import Registry
    from siteclock.gateway.terminals import TerminalRegistry
    from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts, pid_file_reloader
    from siteclock.provisioning.gateway.service import EnrolmentService
    from siteclock.provisioning.gateway.tokens import TokenStore
    from siteclock.provisioning.shared.requests import BrokerEndpoint

    db = existing_db(args.db) if getattr(args, "existing_db", True) else db_folder(args.db)
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
    if db.exists():
        keys_belong_to(db, [("--inss-key", inss_key)])
    return EnrolmentService(
        TokenStore(db),
        TerminalRegistry(db),
        BrokerAccounts(broker_dir / "passwd", reload),
        endpoint=BrokerEndpoint(args.broker_host, args.broker_port, pki.ca_cert.read_text()),
        gateway_keys=keys,
        workplaces=Registry(db, inss_key),
    ), pki


def gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, type=Path, help="the gateway's SQLite file")
    p.add_argument("--broker-dir", required=True, type=Path, help="broker-config directory")
    p.add_argument("--broker-host", required=True, help="broker name terminals connect to")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--reload-pid-file", type=Path, help="Mosquitto pid file (SIGHUP reload)")
    p.add_argument(
        "--inss-key", type=Path, help="INSS key file (default /etc/siteclock/keys/inss.key)"
    )


def token_create(args: argparse.Namespace) -> int:
    from siteclock.gateway.pki import ensure_site_pki
    from siteclock.provisioning.gateway.tokens import TokenStore
    from siteclock.provisioning.shared.ca import ca_fingerprint

    issued = TokenStore(existing_db(args.db)).create(
        args.workplace, ttl_s=args.ttl_hours * 3600, created_by=args.by, note=args.note
    )
    fingerprint = ""
    if args.broker_dir:
        pki = ensure_site_pki(Path(args.broker_dir) / "pki", [args.broker_host or "localhost"])
        fingerprint = ca_fingerprint(pki.ca_cert.read_text())
    print(f"enrolment token for {issued.workplace}: {issued.token}")
    print(f"valid until {local_and_utc(issued.expires_ns)}, single use")
    if fingerprint:
        print(f"site CA fingerprint: {fingerprint}")
    print(
        "installer, on the terminal (it asks for the token; or SITECLOCK_TOKEN / --token-file);"
        " replace the CAPITALS:"
    )
    # Placeholders a shell takes as words: '<id>' would be a redirection when pasted.
    lines = [
        "sudo siteclock provision run --terminal-id TERMINAL_ID",
        f"--workplace {issued.workplace}",
        "--coordinates 'LATITUDE, LONGITUDE'",
        f"--gateway {args.gateway_url or 'https://GATEWAY:8443'}",
        f"--ca-fingerprint {fingerprint or 'CA_FINGERPRINT'}",
        "--reader tty:AMA0:pn532",
    ]
    print("  " + " \\\n      ".join(lines))
    return 0


def serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from siteclock.provisioning.gateway.http import create_app, serve_tls

    created = not Path(args.db).exists()
    args.existing_db = False  # the enrolment endpoint, like the gateway, makes its database
    service, pki = enrolment_service(args)
    host, _, port = args.listen.rpartition(":")
    app = create_app(service, ca_pem=pki.ca_cert.read_text())
    server = serve_tls(app, host or "0.0.0.0", int(port), pki.server_cert, pki.server_key)
    # Flushed: under systemd or a pipe, stdout is block-buffered and the line would not show.
    print(f"enrolment endpoint on https://{host or '0.0.0.0'}:{server.port}", flush=True)
    if created:
        print(f"made a new gateway database: {args.db}", flush=True)
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


def locations(args: argparse.Namespace) -> int:
    """The workplace's location and the different ones terminals' installers typed."""
    from siteclock.gateway.config import DEFAULT_INSS_KEY
    from siteclock.gateway.registry import Registry
    from siteclock.provisioning.gateway.tokens import TokenStore
    from siteclock.provisioning.shared.workplace import parse_reference

    reference = parse_reference(args.workplace)
    db = existing_db(args.db)
    inss_key = Path(args.inss_key or DEFAULT_INSS_KEY)
    keys_belong_to(db, [("--inss-key", inss_key)])
    site = Registry(db, inss_key).workplace(reference)
    if site is None:
        print(f"{reference}: no location yet (the first enrolment that names it sets it)")
    else:
        print(f"{reference}: {site.latitude}, {site.longitude} {site.address or ''}".rstrip())
    conflicts = TokenStore(db).location_conflicts(reference)
    for c in conflicts:
        where = f"{c['latitude']}, {c['longitude']} {c['address'] or ''}".rstrip()
        print(f"  not applied: {where} (given by {c['terminal']} on {local_and_utc(c['at_ns'])})")
    if conflicts:
        print("the site's location was kept; if one of these is right, correct the workplace")
    return 0


def decommission(args: argparse.Namespace) -> int:
    from siteclock.provisioning.gateway.lifecycle import Lifecycle
    from siteclock.provisioning.shared.requests import EnrolmentRefused

    confirmed = args.yes or confirm(f"decommission terminal {args.terminal}", args.terminal)
    service, _ = enrolment_service(args)
    try:
        Lifecycle(service).decommission(args.terminal, confirm=confirmed)
    except EnrolmentRefused as exc:
        return usage_error(str(exc))
    print(f"terminal {args.terminal} decommissioned: disabled, broker login removed")
    return 0


def token_list(args: argparse.Namespace) -> int:
    """Every enrolment token: id, workplace, state, expiry, who made it (never the token)."""
    import time

    from siteclock.provisioning.gateway.tokens import TokenStore
    from siteclock.provisioning.shared.workplace import parse_reference

    only = parse_reference(args.workplace) if args.workplace else None
    now = time.time_ns()
    tokens = [t for t in TokenStore(existing_db(args.db)).list() if only in (None, t.workplace)]
    if not tokens:
        print("no enrolment tokens" + (f" for {only}" if only else ""))
    for t in tokens:
        made = f"by {t.created_by}" if t.created_by else ""
        note = f"({t.note})" if t.note else ""
        print(
            f"{t.id}  {t.workplace}  {t.state(now):<18} expires {local_and_utc(t.expires_ns)}"
            f"  {made} {note}".rstrip()
        )
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    from siteclock.provisioning.gateway.tokens import TokenStore

    token = TokenStore(existing_db(args.db)).revoke(args.id, by=args.by)
    print(f"token {token.id} for {token.workplace} revoked: it can no longer enrol a terminal")
    return 0


def terminals_list(args: argparse.Namespace) -> int:
    """Every terminal: id, workplace, status, keys, when it was last heard of."""
    from siteclock.gateway.terminals import TerminalRegistry

    registry = TerminalRegistry(existing_db(args.db))
    ids = registry.ids()
    if not ids:
        print("no terminals enrolled")
    for terminal_id in ids:
        record = registry.get(terminal_id)
        if record is None:  # removed between the two reads
            continue
        seen = registry.last_heard(terminal_id)
        heard = f"last heard {local_and_utc(seen)}" if seen else "never heard from"
        keys = ", ".join(record.keys) or "no valid key"
        print(f"{terminal_id}  {record.workplace}  {record.status}  keys: {keys}  {heard}")
    return 0
