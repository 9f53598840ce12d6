"""``siteclock migrate-db``: move a site's gateway database to another backend, losing nothing.

A site that outgrows one gateway on SQLite moves to PostgreSQL (docs/postgresql.md): stop the
gateway, copy, point ``database_url`` at the new database, start the gateways. The copy is one
transaction on each side and is verified before it commits (every table's rows, every stored
event's key and digest); on any mismatch nothing is written and the command says why.

    siteclock migrate-db --from sqlite:///var/lib/siteclock/gateway.db \\
        --to postgresql://siteclock@db-host/siteclock
"""

from __future__ import annotations

import argparse
import logging
import sys

from siteclock import log as sclog
from siteclock.gateway.db import DatabaseError, open_gateway_db
from siteclock.gateway.db.copy import CopyError, copy_database
from siteclock.log import fields

log = logging.getLogger("siteclock.gateway.migrate_db")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="siteclock migrate-db",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from", dest="source", required=True,
        help="the database now: a SQLite path or sqlite:///path, or a URL",
    )  # fmt: skip
    parser.add_argument(
        "--to", dest="target", required=True,
        help="the new, empty database: postgresql://user@host/dbname",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sclog.setup("INFO")
    try:
        source, _ = open_gateway_db(args.source)
    except (DatabaseError, OSError) as exc:
        print(f"siteclock migrate-db: cannot open the source: {exc}", file=sys.stderr)
        return 2
    try:
        target, _ = open_gateway_db(args.target)
    except (DatabaseError, OSError) as exc:
        source.close()
        print(f"siteclock migrate-db: cannot open the target: {exc}", file=sys.stderr)
        return 2
    try:
        report = copy_database(
            source,  # type: ignore[arg-type]
            target,  # type: ignore[arg-type]
            progress=lambda table, rows: log.info("copied", extra=fields(table=table, rows=rows)),
        )
    except (CopyError, DatabaseError) as exc:
        print(f"siteclock migrate-db: nothing copied: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
        target.close()
    total = sum(report.rows.values())
    print(f"copied {total} rows in {len(report.rows)} tables from {source.path} to "
          f"{target.path}; {report.events} stored events verified identical")  # fmt: skip
    return 0
