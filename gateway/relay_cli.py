"""``siteclock relay``: the employer's view of the relay, and the way to put events back.

``show`` lists registrations (by id, worker, terminal or state) with the whole problem details
CIaO gave, and the open alerts. ``requeue`` puts refused, needs_review and unresolved events
back on their way once the cause is fixed; ``--dry-run`` prints what it would move. A worker is
named by badge or pseudonymous reference, never by INSS: an INSS-shaped argument is refused,
and every text printed goes through the log redaction.

Example::

    siteclock relay show --config gateway.toml --state refused
    siteclock relay requeue --config gateway.toml --state refused --dry-run
    siteclock relay requeue --db /var/lib/siteclock/gateway.db --id t-roof:12 --id t-roof:13
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from siteclock.gateway.db import db_location, missing_file
from siteclock.gateway.db.interface import Row
from siteclock.gateway.relay_store import REQUEUE_TARGET, RelayStore, State
from siteclock.log import INSS_PATTERN, fields, redact

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A selection the command refuses, with the reason."""


def _key(text: str) -> tuple[str, int]:
    terminal, sep, seq = text.rpartition(":")
    if not sep or not terminal or not seq.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected TERMINAL:SEQ, e.g. t-roof:12")
    return terminal, int(seq)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siteclock relay", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_ in (
        ("show", "list registrations and their problem details, and the open alerts"),
        ("requeue", "put refused / needs_review / unresolved events back on their way"),
    ):
        p = sub.add_parser(name, help=help_)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", type=Path, help="gateway TOML file (its db is used)")
        where.add_argument(
            "--db", type=db_location, help="the gateway's SQLite file or postgresql:// URL"
        )
        p.add_argument("--id", type=_key, action="append", default=[], metavar="TERMINAL:SEQ")
        p.add_argument("--worker", help="badge or worker reference (never an INSS)")
        p.add_argument("--terminal")
        p.add_argument("--state", choices=[s.value for s in State])
        p.add_argument("--limit", type=int, default=200, help="rows shown at most")
        if name == "requeue":
            p.add_argument("--dry-run", action="store_true", help="print, change nothing")
    return parser


def _db_path(args: argparse.Namespace) -> Path | str:
    if args.db is not None:
        return args.db  # type: ignore[no-any-return]
    from siteclock.config import load
    from siteclock.gateway.config import GatewayConfig

    return load(args.config, GatewayConfig).store


def _check_selection(args: argparse.Namespace) -> None:
    if args.worker and INSS_PATTERN.search(args.worker):
        raise UsageError("--worker takes a badge or a worker reference, never an INSS")
    if args.action == "requeue" and not (args.id or args.worker or args.terminal or args.state):
        raise UsageError("requeue needs a selection: --id, --worker, --terminal or --state")


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe_row(row: Row) -> list[str]:
    """Lines for one registration: its key, state, tap and the problem CIaO gave."""
    lines = [
        f"{row['terminal']}:{row['seq']}  {row['state']}  kind={row['kind'] or '-'}  "
        f"badge={row['badge'] or '-'}  worker={row['worker_ref'] or '-'}  "
        f"date={row['reg_date'] or '-'}  ciao_id={row['ciao_id'] or '-'}  "
        f"updated={_when(row['updated_ns'])}"
    ]
    if row["last_error"]:
        lines.append(f"    reason: {row['last_error']}")
    if row["problem"]:
        problem = json.loads(row["problem"])
        head = " ".join(
            str(problem[k]) for k in ("status", "type", "title", "detail") if problem.get(k)
        )
        lines.append(f"    problem: {head}")
        for issue in problem.get("issues") or ():
            parts = [f"{k}={issue[k]!r}" for k in ("in", "name", "value", "detail", "title")
                     if k in issue]  # fmt: skip
            lines.append("      issue: " + " ".join(parts))
    if row["requeued_ns"]:
        lines.append(f"    requeued: {_when(row['requeued_ns'])}")
    return [redact(line) for line in lines]


def run(argv: list[str], out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    args = _parser().parse_args(argv)
    try:
        _check_selection(args)
        db = _db_path(args)
    except (UsageError, OSError, ValueError) as exc:
        print(f"siteclock relay: {exc}", file=sys.stderr)
        return 2
    if missing_file(db):
        print(f"siteclock relay: {db}: no such database", file=sys.stderr)
        return 2
    store = RelayStore(db)
    try:
        rows = store.select(
            keys=args.id, worker=args.worker, terminal=args.terminal, state=args.state
        )
        if args.action == "show":
            for cause, message in sorted(store.open_alerts().items()):
                print(redact(f"ALERT {cause}: {message}"), file=out)
            for row in rows[: args.limit]:
                print("\n".join(describe_row(row)), file=out)
            print(f"{len(rows)} registration(s)", file=out)
            return 0
        movable = [r for r in rows if State(r["state"]) in REQUEUE_TARGET]
        kept = len(rows) - len(movable)
        verb = "would requeue" if args.dry_run else "requeue"
        for row in movable[: args.limit]:
            target = REQUEUE_TARGET[State(row["state"])]
            print(f"{verb} -> {target}: " + "\n".join(describe_row(row)), file=out)
        selection = redact(" ".join(argv))
        if args.dry_run:
            print(f"{len(movable)} would be requeued; {kept} selected but not requeueable "
                  "(final or in flight)", file=out)  # fmt: skip
            return 0
        moved = store.requeue(movable, selection, time.time_ns())
        log.warning("relay events requeued by hand", extra=fields(count=moved, selection=selection))
        print(f"{moved} requeued; {kept} selected but not requeueable (final or in flight)",
              file=out)  # fmt: skip
        return 0
    finally:
        store.close()


def cli(argv: list[str]) -> int:
    from siteclock.log import setup

    setup()
    return run(argv)
