"""``siteclock evidence``: export a worker's signed evidence, and verify an export offline.

``export`` writes one worker's events on one workplace for a period (days in Belgian time,
both included) as sealed JSON (for machines and ``verify``) or CSV (for people). The file holds
the worker's INSS (the employer's own evidence), so it is written with mode 0600 and nothing
about it is logged but its path and counts. ``verify`` needs nothing but the file: it checks the
seal, that every byte is as written, every event's signature with the keys the file lists, and
the chain links between consecutive events; it exits 1 and names the fault when anything fails.
Compare the key ids it prints with the ones your gateway shows (``--gateway-kid`` does it).

Example::

    siteclock evidence export --config gateway.toml --worker w-7f3a --workplace 1Y101DRUNWB5Z \\
        --from 2026-11-01 --to 2026-11-30 -o evidence.json
    siteclock evidence verify evidence.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from siteclock.files import write_secret
from siteclock.gateway.evidence.check import INTACT, verification_report
from siteclock.gateway.evidence.document import EvidenceInvalid, open_document
from siteclock.gateway.evidence.export import (
    NothingToExport,
    build_evidence,
    export_csv,
    export_json,
)
from siteclock.gateway.site_time import day_start_ns
from siteclock.log import INSS_PATTERN


@dataclass(frozen=True, slots=True)
class Sources:
    db: Path
    inss_key: Path
    signing_key: Path


def _sources(args: argparse.Namespace) -> Sources:
    if args.config is not None:
        from siteclock.config import load
        from siteclock.gateway.config import GatewayConfig

        cfg = load(args.config, GatewayConfig)
        return Sources(Path(cfg.db), cfg.inss_key_path, Path(cfg.signing_key_file))
    if args.inss_key is None or args.signing_key is None:
        raise EvidenceInvalid("--db needs --inss-key and --signing-key (or give --config)")
    return Sources(args.db, args.inss_key, args.signing_key)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siteclock evidence", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    exp = sub.add_parser("export", help="write a worker's evidence for a workplace and period")
    where = exp.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="gateway TOML file (db and keys from it)")
    where.add_argument("--db", type=Path, help="the gateway's SQLite file")
    exp.add_argument("--inss-key", type=Path, help="with --db: the INSS key file")
    exp.add_argument("--signing-key", type=Path, help="with --db: the gateway's signing key")
    exp.add_argument("--worker", required=True, help="worker reference (never an INSS)")
    exp.add_argument("--workplace", required=True, help="Declaration of Works reference")
    exp.add_argument("--from", dest="first", type=date.fromisoformat, required=True,
                     metavar="YYYY-MM-DD")  # fmt: skip
    exp.add_argument("--to", dest="last", type=date.fromisoformat, required=True,
                     metavar="YYYY-MM-DD", help="last day, included")  # fmt: skip
    exp.add_argument("--format", choices=("json", "csv"), help="default: from -o's suffix")
    exp.add_argument("-o", "--output", type=Path, required=True)
    ver = sub.add_parser("verify", help="re-check an evidence file offline")
    ver.add_argument("file", type=Path)
    ver.add_argument("--gateway-kid", help="the key id the seal must have (from your gateway)")
    return parser


def _export(args: argparse.Namespace) -> int:
    from siteclock.gateway.db import SQLiteGatewayDB
    from siteclock.gateway.registry import Registry
    from siteclock.keys import load

    if INSS_PATTERN.search(args.worker):
        raise EvidenceInvalid("--worker takes a worker reference, never an INSS")
    if args.last < args.first:
        raise EvidenceInvalid("--to is before --from")
    fmt = args.format or ("csv" if args.output.suffix.lower() == ".csv" else "json")
    sources = _sources(args)
    signer = load(sources.signing_key)
    db = SQLiteGatewayDB(sources.db)
    registry = Registry(db, sources.inss_key)
    try:
        evidence = build_evidence(
            db, registry, worker_ref=args.worker, workplace=args.workplace,
            from_ns=day_start_ns(args.first), to_ns=day_start_ns(args.last + timedelta(days=1)),
            now_ns=time.time_ns(),
        )  # fmt: skip
    finally:
        registry.close()
        db.close()
    data = export_json(evidence, signer) if fmt == "json" else export_csv(evidence).encode()
    write_secret(args.output, data)
    report = evidence["report"]
    print(f"{args.output}: {report['events']} events of worker {args.worker} on "
          f"{args.workplace}, {args.first} to {args.last} ({fmt}, mode 0600: it holds the "
          f"worker's INSS); verification: {report['result']}")  # fmt: skip
    return 0 if report["result"] == INTACT else 1


def _verify(args: argparse.Namespace) -> int:
    opened = open_document(args.file.read_bytes())
    evidence = opened.evidence
    report = verification_report(evidence)
    if report != evidence.get("report"):
        report["problems"].append("the report in the file is not what its events give")
        report["result"] = "FAILED"
    if args.gateway_kid and opened.seal_kid != args.gateway_kid:
        report["problems"].append(f"sealed by key {opened.seal_kid}, not {args.gateway_kid}")
        report["result"] = "FAILED"
    kids = sorted({f"{k['terminal']}/{k['kid']}" for k in evidence.get("terminal_keys", [])})
    print(f"{args.file}: sealed by gateway key {opened.seal_kid} ({opened.seal_alg})")
    print(f"  worker {evidence['worker']['ref']} on {evidence['workplace']}, "
          f"{evidence['period']['from']} to {evidence['period']['to']}")  # fmt: skip
    print(f"  events {report['events']}, signatures verified {report['signatures_verified']}, "
          f"envelopes {report['envelopes']}, chain links checked "
          f"{report['chain_links_checked']}")  # fmt: skip
    print(f"  NSSO states {report['nsso_states']}")
    print(f"  terminal keys: {', '.join(kids) or 'none'}")
    for problem in report["problems"]:
        print(f"  PROBLEM: {problem}")
    print(f"  result: {report['result']}")
    return 0 if report["result"] == INTACT else 1


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _export(args) if args.action == "export" else _verify(args)
    except (EvidenceInvalid, NothingToExport, OSError) as exc:
        print(f"siteclock evidence {args.action}: {exc}", file=sys.stderr)
        return 1 if args.action == "verify" else 2
