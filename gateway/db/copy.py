"""Copy a whole gateway database into an empty one of another backend (a site outgrowing its
SQLite file moves to PostgreSQL; or back), then prove nothing was lost.

The copy reads the source inside one write transaction (on SQLite ``BEGIN IMMEDIATE``: a
gateway still running against the file waits, so the copy is one consistent state) and writes
the target inside one transaction: it lands whole or not at all. Every table is copied, by
column name, in arrival order (SQLite's ``rowid``), so tables added by later migrations come
along without this module knowing them. The check afterwards compares every table's row count
and every stored event's ``(terminal, seq, digest)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from siteclock.gateway.db.core import Core

BATCH = 1000
SKIPPED = frozenset({"schema_version"})
"""Written by the target's own migrations, never copied."""
MUST_BE_EMPTY = ("inbox", "registrations", "terminals", "reg_workers")


class CopyError(Exception):
    """The copy was refused or did not match; the target was left unchanged."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    """Rows copied per table."""
    events: int = 0
    """Stored events (inbox rows) found identical in both databases afterwards."""


def _columns(db: Core, table: str) -> list[str]:
    with db.reading() as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _count(db: Core, table: str) -> int:
    with db.reading() as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(n)


def _parents(db: Core, table: str) -> set[str]:
    """The tables ``table`` refers to by foreign key (they are copied before it)."""
    with db.reading() as conn:
        if db.backend == "sqlite":
            return {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
        return {
            row[0]
            for row in conn.execute(
                "SELECT confrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid = ?::regclass",
                (table,),
            )
        }


def in_dependency_order(db: Core, tables: list[str]) -> list[str]:
    """``tables`` with each after the tables it refers to (PostgreSQL checks foreign keys
    row by row as they arrive)."""
    parents = {table: _parents(db, table) & set(tables) for table in tables}
    ordered: list[str] = []
    while parents:
        ready = sorted(t for t, refs in parents.items() if refs <= set(ordered) | {t})
        if not ready:
            raise CopyError(f"foreign keys form a cycle among {', '.join(sorted(parents))}")
        ordered += ready
        for table in ready:
            del parents[table]
    return ordered


def copy_database(
    source: Core, target: Core, *, progress: Callable[[str, int], None] | None = None
) -> CopyReport:
    """Copy every row of ``source`` into ``target`` (both migrated to the same version; the
    target empty of events, terminals and workers), then verify. Raises :class:`CopyError`."""
    if source.schema_version() != target.schema_version():
        raise CopyError(
            f"schema versions differ (source {source.schema_version()}, target "
            f"{target.schema_version()}): run the same siteclock version on both"
        )
    for table in MUST_BE_EMPTY:
        if _count(target, table):
            raise CopyError(f"the target already holds {table} rows: copy only into a new one")
    missing = sorted(set(source.table_names()) - set(target.table_names()))
    if missing:
        raise CopyError(f"the target has no table {', '.join(missing)}")
    report = CopyReport()
    with source.atomic(), target.atomic():
        tables = [t for t in source.table_names() if t not in SKIPPED]
        for table in in_dependency_order(source, tables):
            report.rows[table] = _copy_table(source, target, table)
            if progress is not None:
                progress(table, report.rows[table])
        reset = getattr(target, "reset_identities", None)
        if reset is not None:
            reset()
        report.events = _verify(source, target, report)
    return report


def _copy_table(source: Core, target: Core, table: str) -> int:
    columns = [c for c in _columns(source, table) if c != "rowid"]
    names = ", ".join(columns)
    insert = f"INSERT OR REPLACE INTO {table}({names}) VALUES ({', '.join('?' * len(columns))})"
    in_order = source.backend == "sqlite" or "rowid" in _columns(source, table)
    order = "ORDER BY rowid" if in_order else ""
    copied = 0
    with source.reading() as read:
        cursor = read.execute(f"SELECT {names} FROM {table} {order}")
        while rows := cursor.fetchmany(BATCH):
            with target.reading() as write:  # the target's open transaction
                write.executemany(insert, [tuple(row) for row in rows])
            copied += len(rows)
    return copied


def _verify(source: Core, target: Core, report: CopyReport) -> int:
    for table, copied in report.rows.items():
        if _count(target, table) != copied or _count(source, table) != copied:
            raise CopyError(
                f"{table}: {_count(source, table)} rows in the source, "
                f"{_count(target, table)} in the target after copying {copied}"
            )
    query = "SELECT terminal, seq, digest FROM inbox"
    with source.reading() as conn:
        held = {(t, s, bytes(d)) for t, s, d in conn.execute(query)}
    with target.reading() as conn:
        landed = {(t, s, bytes(d)) for t, s, d in conn.execute(query)}
    if held != landed:
        raise CopyError(
            f"{len(held - landed)} stored events missing or different in the target, "
            f"{len(landed - held)} there that the source does not hold"
        )
    return len(landed)
