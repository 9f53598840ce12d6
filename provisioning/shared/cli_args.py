"""Command-line pieces both sides of ``siteclock provision`` use: secrets, workplace, confirmation.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock.provisioning.shared.workplace import (
    Address,
    Coordinates,
    WorkplaceBinding,
    parse_workplace_input,
)

DEFAULT_DATA_DIR = Path("/var/lib/siteclock")


def usage_error(message: str) -> int:
    from siteclock.log import redact

    print(f"siteclock: {redact(message)}", file=sys.stderr)
    return 2


def failure(message: str) -> int:
    """An operation that could not be done (exit 1): one line, on stderr, INSS masked."""
    from siteclock.log import redact

    print(f"siteclock: {redact(message)}", file=sys.stderr)
    return 1


def existing_db(path: Path | str) -> Path:
    """``--db`` for a command that works on the gateway's data: the file must exist.

    A typo must not make an empty database that then takes workers and tokens nobody else sees.
    The gateway (or ``provision serve``) makes the database on its first start.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"--db {path}: the folder {path.parent} does not exist (check the path)")
    if not path.is_file():
        raise ValueError(
            f"--db {path}: no gateway database there (check the path; the gateway makes it on "
            "its first start)"
        )
    return path


def db_folder(path: Path | str) -> Path:
    """``--db`` for a service that may make the database: its folder must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(
            f"--db {path}: the folder {path.parent} does not exist; create it (owned by the "
            "gateway's user) or fix the path"
        )
    return path


def guarded(command: Callable[[], int]) -> int:
    """Run a command so that every error a person can cause is a line, never a traceback:
    bad input exits 2, a failed operation 1. ``SITECLOCK_DEBUG=1`` lets tracebacks through."""
    import sqlite3

    if os.environ.get("SITECLOCK_DEBUG"):
        return command()
    try:
        return command()
    except KeyboardInterrupt:
        return failure("interrupted")
    except FileNotFoundError as exc:
        return usage_error(f"{exc.filename}: file not found")
    except PermissionError as exc:
        return failure(f"{exc.filename}: permission denied (run as the service's user?)")
    except ValueError as exc:  # WorkerError, WorkplaceError, RegistryError, ConfigError...
        return usage_error(str(exc))
    except sqlite3.Error as exc:
        return failure(f"database: {exc}")
    except OSError as exc:
        return failure(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a person at a shell
        return failure(
            f"unexpected error ({type(exc).__name__}: {exc}); rerun with SITECLOCK_DEBUG=1 "
            "to see where, and report it"
        )


def local_and_utc(instant_ns: int) -> str:
    """An instant as a person reads it: local date and time with its zone, then UTC."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(instant_ns / 1e9, UTC)
    local = moment.astimezone()
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({moment:%Y-%m-%d %H:%M} UTC)"


class _RefusedSecret(argparse.Action):
    """``--token X`` / ``--inss X``: refused with the way to give it instead."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        name = self.dest
        parser.error(
            f"--{name} is not accepted on the command line (ps and shell history would keep "
            f"it): use --{name}-file FILE, set SITECLOCK_{name.upper()}, or leave it out to be "
            "asked"
        )


def secret_args(p: argparse.ArgumentParser, name: str, what: str) -> None:
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


def binding_from_args(args: argparse.Namespace) -> WorkplaceBinding:
    reference = parse_workplace_input(args.workplace)
    coords = Coordinates.parse(args.coordinates) if args.coordinates else None
    address = None
    if args.street:
        address = Address(
            args.street, args.house_number or "", args.post_code or "", args.municipality or "",
            args.box or "",
        )  # fmt: skip
    return WorkplaceBinding(reference, coords, address)


def binding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workplace", required=True, help="DoW reference or its QR-code URL")
    p.add_argument("--coordinates", help="'latitude, longitude' of the workplace")
    p.add_argument("--street")
    p.add_argument("--house-number")
    p.add_argument("--box")
    p.add_argument("--post-code")
    p.add_argument("--municipality")


def confirm(what: str, expected: str) -> bool:
    """Ask the person to retype ``expected``: a yes/no prompt is too easy to click through."""
    if not sys.stdin.isatty():
        return False
    answer = input(f"{what}? Type {expected} to confirm: ")
    return answer.strip().upper() == expected.upper()
