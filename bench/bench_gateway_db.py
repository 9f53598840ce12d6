"""``gateway_db``: the gateway data layer's own costs on SQLite and on PostgreSQL.

On this machine, with both engines durable (SQLite WAL with ``synchronous=FULL``; a local
PostgreSQL 15 with ``fsync`` on, started for the run as the tests start theirs):

* ``store_per_s_*``: events stored through the inbox's operation in groups of
  :data:`GROUP` per transaction, as the intake's group commit stores them;
* ``claim_per_s_*``: relay rows claimed and marked submitted in batches of :data:`BATCH`
  (one transaction each), as the relay's submitter does before each POST;
* ``migrate_rows_per_s``: ``siteclock migrate-db``'s copy of the SQLite database just filled
  into PostgreSQL, verification included.

Measured interleaved (:mod:`bench.rounds`), each round on fresh databases. It shows what the
PostgreSQL backend costs one gateway (a network round trip per statement instead of a
library call), not what several gateways gain; that is the ``scale`` benchmark's job.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench import rounds
from siteclock.gateway.db import GatewayDB, SQLiteGatewayDB
from siteclock.gateway.db.copy import copy_database
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from tests.support.postgres import running_postgres

EVENTS = 10_000
GROUP = 50
BATCH = 100
TERMINALS = 20


def _rows() -> list[tuple[Any, ...]]:
    return [
        (f"t-{n % TERMINALS:03d}", n // TERMINALS + 1, f"ev-{n}", n.to_bytes(32, "big"),
         b"b" * 300, "ed25519", "kid", b"s" * 64, "1Y1003SQ5VSSZ", "in", f"nfc-a:{n % 500:08X}",
         1_700_000_000_000_000_000 + n * 10**9, "[]", time.time_ns())
        for n in range(EVENTS)
    ]  # fmt: skip


def _store(db: GatewayDB, rows: list[tuple[Any, ...]]) -> float:
    started = time.perf_counter()
    for i in range(0, len(rows), GROUP):
        db.store_events(rows[i : i + GROUP])
    return len(rows) / (time.perf_counter() - started)


def _claim(db: GatewayDB) -> float:
    db.take_new_events(time.time_ns(), full=True)
    started, claimed = time.perf_counter(), 0
    while rows := db.sendable(time.time_ns(), BATCH):
        with db.atomic():
            keys = db.still_sendable([(r["terminal"], r["seq"]) for r in rows])
            db.set_registrations([(key, {"state": "submitted"}) for key in keys])
        claimed += len(keys)
    if claimed != EVENTS:
        raise RuntimeError(f"claimed {claimed} of {EVENTS}")
    return claimed / (time.perf_counter() - started)


def run() -> dict[str, Any]:
    rows = _rows()
    with tempfile.TemporaryDirectory() as tmp, running_postgres(durable=True) as cluster:
        made = iter(range(1000))
        sqlite_files: list[Path] = []

        def on_sqlite() -> tuple[float, float]:
            path = Path(tmp) / f"gateway-{next(made)}.db"
            sqlite_files.append(path)
            db = SQLiteGatewayDB(path)
            try:
                return _store(db, rows), _claim(db)
            finally:
                db.close()

        def on_postgres() -> tuple[float, float]:
            db = PostgresGatewayDB(cluster.fresh_url())
            try:
                return _store(db, rows), _claim(db)
            finally:
                db.close()

        def migrate() -> float:
            source = SQLiteGatewayDB(sqlite_files[-1])
            target = PostgresGatewayDB(cluster.fresh_url())
            try:
                started = time.perf_counter()
                report = copy_database(source, target)
                return sum(report.rows.values()) / (time.perf_counter() - started)
            finally:
                source.close()
                target.close()

        measured = rounds.interleaved({"sqlite": on_sqlite, "postgresql": on_postgres})
        copies = [migrate() for _ in range(rounds.ROUNDS)]
    figures: dict[str, Any] = {"events": EVENTS, "group": GROUP, "batch": BATCH}
    for backend, short in (("sqlite", "sqlite"), ("postgresql", "pg")):
        figures |= rounds.figure(f"store_per_s_{short}", [m[0] for m in measured[backend]])
        figures |= rounds.figure(f"claim_per_s_{short}", [m[1] for m in measured[backend]])
    for kind in ("store", "claim"):
        figures |= rounds.ratio_of_medians(
            f"{kind}_ratio_pg_to_sqlite",
            [m[kind == "claim"] for m in measured["postgresql"]],
            [m[kind == "claim"] for m in measured["sqlite"]],
        )
    figures |= rounds.figure("migrate_rows_per_s", copies)
    return figures
