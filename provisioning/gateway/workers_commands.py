"""``siteclock workers …``: the employer's commands on workers, badges and workplaces.

  add | import | link-badge | block-badge | unblock-badge | remove | assign | list | workplace

Every command works on an existing gateway database (``--db``): a typo in the path is an error,
never a new empty database. Exit 0 on success, 1 when the operation failed, 2 on bad input.
An INSS is never a command-line argument (``--inss-file``, ``SITECLOCK_INSS`` or a prompt) and
never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteclock.provisioning.gateway.key_files import keys_belong_to
from siteclock.provisioning.gateway.workers_csv import WorkerError
from siteclock.provisioning.shared.cli_args import (
    confirm,
    existing_db,
    guarded,
    read_secret,
    secret_args,
)

BadgeReader = Callable[[str, float], str]
"""Reads one badge from the reader a spec names (``--tap``): given by the command layer, which
may reach the terminal side's reader code (this gateway-side module may not)."""


def _workers(args: argparse.Namespace) -> Any:
    from siteclock.gateway.config import DEFAULT_INSS_KEY
    from siteclock.gateway.registry import Registry
    from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key

    db = existing_db(args.db)
    inss_key = Path(args.inss_key or DEFAULT_INSS_KEY)
    ref_key = Path(args.ref_key or DEFAULT_INSS_KEY.with_name("worker-ref.key"))
    keys_belong_to(db, [("--inss-key", inss_key), ("--ref-key", ref_key)])
    registry = Registry(db, inss_key)
    ref_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Workers(registry, load_or_create_ref_key(ref_key))


def _add(args: argparse.Namespace) -> int:
    from siteclock.provisioning.gateway.workers_csv import validate_row

    inss = read_secret(args, "inss", "the worker's INSS")
    row = validate_row({
        "inss": inss, "name": args.name, "employer": args.employer,
        "capacity": args.capacity, "badge": args.badge or "", "workplace": args.workplace or "",
    })  # fmt: skip
    ref = _workers(args).add(row)
    print(f"worker {ref} ({row.name}) saved")
    return 0


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise WorkerError(f"{path}: no such file (give the path of the CSV to import)")
    report = _workers(args).import_csv(path.read_text(encoding="utf-8-sig"))
    print(report.text())
    return 0 if not report.rejected else 1


def _link(args: argparse.Namespace) -> int:
    if args.at is not None:
        import time

        from siteclock.provisioning.gateway.badge_enrolment import link_next_tap

        badge = link_next_tap(
            Path(existing_db(args.db)), _workers(args), worker_ref=args.worker,
            terminal_id=args.at, since_ns=time.time_ns(), timeout_s=args.timeout,
            on_waiting=lambda: print(f"tap the new badge on terminal {args.at} …", flush=True),
        )  # fmt: skip
        print(f"badge {badge} linked to {args.worker} (the enrolment tap is not sent to the NSSO)")
        return 0
    uid = args.uid
    if uid is None:
        print(f"tap the badge on the reader {args.tap} …")
        uid = args.read_badge(args.tap, args.timeout)
    badge = _workers(args).link_badge(uid, args.worker)
    print(f"badge {badge} linked to {args.worker}")
    return 0


def _block(args: argparse.Namespace) -> int:
    badge = _workers(args).block_badge(args.uid)
    print(f"badge {badge} blocked")
    return 0


def _unblock(args: argparse.Namespace) -> int:
    from siteclock.provisioning.gateway.workers_csv import parse_badge

    badge = parse_badge(args.uid)
    _workers(args).registry.unblock_badge(badge)
    print(f"badge {badge} active again")
    return 0


def _remove(args: argparse.Namespace) -> int:
    workers = _workers(args)
    found = workers.registry.worker(args.worker)
    if found is None:
        raise WorkerError(f"unknown worker {args.worker!r} (see 'workers list')")
    if not (args.yes or confirm(f"remove {found.name} ({args.worker})", args.worker)):
        print("not removed: confirm with --yes or by typing the reference")
        return 1
    workers.registry.remove_worker(args.worker)
    print(f"worker {args.worker} ({found.name}) removed with their badges and assignments")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from siteclock.provisioning.shared.workplace import parse_reference

    source, target = parse_reference(args.from_workplace), parse_reference(args.to_workplace)
    moved = _workers(args).registry.move_workers(
        source, target, workers=args.worker or None, keep=args.keep_old
    )
    how = "added to" if args.keep_old else "moved to"
    print(f"{len(moved)} worker(s) {how} {target}" + ("" if moved else f" ({source} has none)"))
    for ref in moved:
        print(f"  {ref}")
    return 0


def _list(args: argparse.Namespace) -> int:
    listing = _workers(args).registry.listing(args.workplace)
    if not listing:
        print("no workers" + (f" on {args.workplace}" if args.workplace else ""))
    for worker in listing:
        badges = ", ".join(
            f"{badge}{'' if active else ' (blocked)'}" for badge, active in worker.badges
        )
        print(f"{worker.ref}\t{worker.name}\t{worker.employer}\t{badges or 'no badge'}")
    return 0


def _workplace(args: argparse.Namespace) -> int:
    from siteclock.provisioning.shared.cli_args import binding_from_args

    binding = binding_from_args(args)
    registry = _workers(args).registry
    if registry.has_workplace(binding.reference) and not args.replace:
        raise WorkerError(
            f"{binding.reference} already has a location; add --replace to change it "
            "(every registration of the site is sent with it)"
        )
    coords, address = binding.coordinates, binding.address
    if coords is None and address is None:
        raise WorkerError("give the workplace's --coordinates or its address (--street ...)")
    registry.add_workplace(
        binding.reference,
        latitude=coords.latitude if coords else None,
        longitude=coords.longitude if coords else None,
        address=address.to_ciao() if address else None,
    )
    print(f"workplace {binding.reference} saved")
    return 0


def workers_parser() -> argparse.ArgumentParser:
    from siteclock.provisioning.shared.cli_args import binding_args

    parser = argparse.ArgumentParser(
        prog="siteclock workers", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
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
    add.set_defaults(func=_add)
    imp = sub.add_parser(
        "import", help="import a CSV (',' or ';'): inss,name,employer,capacity[,badge,workplace]"
    )
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=_import)
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
    link.set_defaults(func=_link)
    block = sub.add_parser("block-badge", help="block a lost badge")
    block.add_argument("uid")
    block.set_defaults(func=_block)
    unblock = sub.add_parser("unblock-badge", help="make a blocked badge active again")
    unblock.add_argument("uid")
    unblock.set_defaults(func=_unblock)
    remove = sub.add_parser("remove", help="remove a worker, their badges and assignments")
    remove.add_argument("--worker", required=True, help="worker reference (w-...)")
    remove.add_argument("--yes", action="store_true", help="confirm without asking")
    remove.set_defaults(func=_remove)
    assign = sub.add_parser(
        "assign", help="move a crew (or some of it) to another workplace, nothing retyped"
    )
    assign.add_argument("--from-workplace", required=True)
    assign.add_argument("--to-workplace", required=True)
    assign.add_argument(
        "--worker", action="append", help="only this worker (repeat for several); default: all"
    )
    assign.add_argument(
        "--keep-old", action="store_true", help="also keep them on the old workplace's roster"
    )
    assign.set_defaults(func=_assign)
    lst = sub.add_parser("list", help="workers with their badges, or 'no badge' (never an INSS)")
    lst.add_argument("--workplace", help="only this workplace's roster")
    lst.set_defaults(func=_list)
    place = sub.add_parser("workplace", help="create (or --replace) a workplace's location")
    binding_args(place)
    place.add_argument("--replace", action="store_true")
    place.set_defaults(func=_workplace)
    return parser


def workers_cli(argv: list[str], *, read_badge: BadgeReader | None = None) -> int:
    args = workers_parser().parse_args(argv)

    def unavailable(spec: str, _timeout_s: float) -> str:
        raise WorkerError(f"--tap {spec}: no reader support here; type the UID with --uid")

    args.read_badge = read_badge or unavailable
    return guarded(lambda: int(args.func(args)))


__all__ = ["BadgeReader", "workers_cli", "workers_parser"]
