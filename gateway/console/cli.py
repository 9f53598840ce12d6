"""``siteclock console``: the console's accounts from the command line, its audit trail, and
the console on its own (the gateway serves it too when ``gateway.toml`` has ``[console]``).

Passwords are never arguments (they would sit in the shell history and ``ps``): they are
asked for, or read from the first line of ``--password-file`` (``-`` for standard input).

Example::

    siteclock console add-user --config gateway.toml an --role admin
    siteclock console add-user --config gateway.toml bert --role site_manager \\
        --worksite 1Y1003SQ5VSSZ --language fr
    siteclock console users --config gateway.toml
    siteclock console audit --config gateway.toml --limit 50
    siteclock console serve --config gateway.toml
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from pathlib import Path

from siteclock.config import ConfigError, load
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.console.accounts import AccountError, Accounts, Role
from siteclock.gateway.console.config import LANGUAGES, ConsoleConfig
from siteclock.gateway.console.server import ConsoleServerError, serve_gateway_console
from siteclock.gateway.console.templating import format_ns
from siteclock.gateway.db import RELAY_BUSY_TIMEOUT_S, SQLiteGatewayDB


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: ``--password x`` must not pass for ``--password-file x``.
    parser = argparse.ArgumentParser(
        prog="siteclock console", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="action", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, allow_abbrev=False)
        p.add_argument("--config", type=Path, required=True, help="gateway TOML file")
        return p

    add = command("add-user", "create an account")
    add.add_argument("username")
    add.add_argument("--role", choices=[r.value for r in Role], required=True)
    add.add_argument("--worksite", action="append", default=[], metavar="REF",
                     help="a worksite a site manager sees (repeat for several)")  # fmt: skip
    add.add_argument("--language", choices=LANGUAGES, default="nl")
    add.add_argument("--password-file", help="read the password from this file ('-': stdin)")

    passwd = command("set-password", "give an account a new password (ends its sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-file")

    update = command("update-user", "change an account's role, worksites or state")
    update.add_argument("username")
    update.add_argument("--role", choices=[r.value for r in Role])
    update.add_argument("--worksite", action="append", metavar="REF")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", action="store_true")
    state.add_argument("--enable", action="store_true")

    remove = command("remove-user", "delete an account")
    remove.add_argument("username")

    command("users", "list the accounts")
    trail = command("audit", "print the audit trail, newest first")
    trail.add_argument("--limit", type=int, default=100)
    command("serve", "serve the console on its own (HTTPS, until Ctrl-C)")
    return parser


def _password(source: str | None) -> str:
    if source == "-":
        return sys.stdin.readline().rstrip("\n")
    if source:
        return Path(source).read_text().splitlines()[0] if Path(source).stat().st_size else ""
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _console_config(cfg: GatewayConfig) -> ConsoleConfig:
    return cfg.console if cfg.console is not None else ConsoleConfig()


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = load(args.config, GatewayConfig)
    if args.action == "serve":
        return _serve(cfg)
    db = SQLiteGatewayDB(cfg.db, busy_timeout_s=RELAY_BUSY_TIMEOUT_S)
    try:
        accounts = Accounts(db)
        if args.action == "add-user":
            user = accounts.add(
                args.username, _password(args.password_file), role=args.role,
                worksites=args.worksite, language=args.language,
            )  # fmt: skip
            sites = ", ".join(sorted(user.worksites)) or "every worksite"
            print(f"added {user.username} ({user.role}: {sites})")
        elif args.action == "set-password":
            accounts.set_password(args.username, _password(args.password_file))
            print(f"password of {args.username} changed; its sessions are closed")
        elif args.action == "update-user":
            disabled = True if args.disable else (False if args.enable else None)
            accounts.update(args.username, role=args.role, worksites=args.worksite,
                            disabled=disabled)  # fmt: skip
            print(f"updated {args.username}")
        elif args.action == "remove-user":
            accounts.remove(args.username)
            print(f"removed {args.username}")
        elif args.action == "users":
            for user, off in accounts.all():
                sites = ", ".join(sorted(user.worksites)) or "every worksite"
                print("\t".join([user.username, user.role, sites] + (["DISABLED"] if off else [])))
        elif args.action == "audit":
            for _id, at_ns, who, action, detail, remote in db.console_audit(limit=args.limit):
                print(f"{format_ns(at_ns)}\t{who}\t{action}\t{detail}\t{remote}")
    finally:
        db.close()
    return 0


def _serve(cfg: GatewayConfig) -> int:
    served = serve_gateway_console(cfg, _console_config(cfg))
    print(f"console at {served.url} (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    served.stop()
    return 0


def cli(argv: list[str]) -> int:
    try:
        return run(argv)
    except (AccountError, ConfigError, ConsoleServerError, OSError) as exc:
        print(f"siteclock console: {exc}", file=sys.stderr)
        return 2
