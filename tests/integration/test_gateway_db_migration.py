"""``siteclock migrate-db``: a site's SQLite gateway database moved to PostgreSQL, losing nothing.

The source is filled through the data layer as a running site fills it (signed events from
several terminals, relay rows in every state, alerts, terminals and keys, workers, decisions,
requeues, tokens); the real command copies it into a real PostgreSQL; the test then reads both
through the data layer and finds every event, row and count again, and the gateway carries on
on PostgreSQL (new events and alerts are stored after the copied ones).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from siteclock.gateway.db import GatewayDB, SQLiteGatewayDB
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from siteclock.gateway.registry import Registry
from tests.support.ciao import WORKPLACE, populate
from tests.support.inbox import TerminalFeed, insert, make_events
from tests.support.postgres import PostgresCluster

TERMINALS = ("t-north-01", "t-north-02", "t-south-01")


def _fill_site(tmp_path: Path) -> Path:
    db_file = tmp_path / "gateway.db"
    registry = Registry(db_file, tmp_path / "inss.key")
    people = populate(registry, 12)
    registry.close()
    feeds = [TerminalFeed(t, WORKPLACE) for t in TERMINALS]
    insert(db_file, make_events(feeds, [p.badge for p in people], 600))
    db = SQLiteGatewayDB(db_file)
    try:
        db.take_new_events(10, full=True)
        rows = db.registrations_in(["queued"], limit=1000)
        states = ["registered", "rejected", "refused", "pending", "queued"]
        db.set_registrations(
            ((row["terminal"], row["seq"]),
             {"state": states[i % 5], "remarks": ["r"] if i % 5 == 1 else [], "notified": i % 2})
            for i, row in enumerate(rows)
        )  # fmt: skip
        refused = db.select_registrations(state="refused", limit=3)
        db.requeue_registrations(refused, {"refused": "queued"}, "--terminal t-north-01", 20)
        db.record_security_alert(TERMINALS[0], 7, "seq_gap", "seqs 7..9 never arrived", at_ns=5)
        for terminal in TERMINALS:
            db.add_terminal(terminal, WORKPLACE, "active", 1)
            db.add_terminal_key(terminal, f"kid-{terminal}", "ed25519", b"\x01" * 32, 1)
            db.record_heartbeat(terminal, '{"queue": 0}', 2, ("boot-1", 3, 4, 5))
        db.record_decisions([(TERMINALS[0], 1, WORKPLACE, "w-0", 1, "in", "in", "", 9)])
        db.add_token("hash-1", WORKPLACE, 1, 2, "employer", "")
        db.raise_relay_alert("ciao_down", "CIaO unreachable", 3)
        db.save_not_before(1234)
    finally:
        db.close()
    return db_file


def _picture(db: GatewayDB) -> dict[str, object]:
    """What a site's database holds, read through the data layer."""
    return {
        "events": {t: db.event_keys(t) for t in TERMINALS},
        "counts": db.registration_counts(),
        "rows": [tuple(r) for r in db.select_registrations()],
        "alerts": db.security_alerts(),
        "requeues": db.requeue_audit(),
        "terminals": {t: db.terminal(t) for t in TERMINALS},
        "heartbeats": {t: db.last_heartbeat(t) for t in TERMINALS},
        "sync": db.sync_point(TERMINALS[0], "boot-1"),
        "registry": (db.registry_version(), db.roster_rows(WORKPLACE)),
        "decision": db.decision((TERMINALS[0], 1)),
        "tokens": db.tokens(),
        "relay_alerts": db.open_relay_alerts(),
        "not_before": db.not_before_ns(),
    }


def _siteclock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siteclock.cli", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _migrate(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return _siteclock("migrate-db", "--from", source, "--to", target)


def test_a_site_moves_to_postgresql_with_every_event(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    db_file = _fill_site(tmp_path)
    url = postgres.fresh_url()

    done = _migrate(f"sqlite://{db_file}", url)

    assert done.returncode == 0, done.stderr
    assert "600 stored events verified identical" in done.stdout
    # The employer's tools read the moved site as they read the file.
    for command in (["relay", "show", "--limit", "1000"], ["sequence-issues"]):
        shown = [_siteclock(*command, "--db", where) for where in (str(db_file), url)]
        assert shown[0].returncode == shown[1].returncode == 0, shown[1].stderr
        assert shown[0].stdout == shown[1].stdout
    source, target = SQLiteGatewayDB(db_file), PostgresGatewayDB(url)
    try:
        before, after = _picture(source), _picture(target)
        assert sum(len(keys) for keys in before["events"].values()) == 600  # type: ignore[attr-defined]
        assert after == before
        # The gateway carries on there: a new event, a new alert, new relay rows.
        feed = TerminalFeed("t-new-01", WORKPLACE)
        insert(url, [feed.event("in", "nfc-a:00000001", time.time_ns())])
        target.record_security_alert("t-new-01", 1, "seq_gap", "why", at_ns=6)
        assert target.take_new_events(11, full=True) == 1  # only the new event is new
        assert target.count_events() == 601
        assert len(target.security_alerts()) == 2
    finally:
        source.close()
        target.close()


def test_a_target_that_holds_events_is_refused_and_left_as_it_was(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    db_file = _fill_site(tmp_path)
    url = postgres.fresh_url()
    assert _migrate(str(db_file), url).returncode == 0

    again = _migrate(str(db_file), url)  # a second copy into the same database

    assert again.returncode == 1
    assert "already holds inbox rows" in again.stderr
    target = PostgresGatewayDB(url)
    try:
        assert target.count_events() == 600
    finally:
        target.close()


def test_a_site_on_postgresql_can_be_copied_back_to_a_new_sqlite_file(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    db_file = _fill_site(tmp_path)
    url = postgres.fresh_url()
    assert _migrate(str(db_file), url).returncode == 0
    back = tmp_path / "back" / "gateway.db"
    back.parent.mkdir()

    done = _migrate(url, f"sqlite://{back}")

    assert done.returncode == 0, done.stderr
    original, copied = SQLiteGatewayDB(db_file), SQLiteGatewayDB(back)
    try:
        assert _picture(copied) == _picture(original)
        copied.record_security_alert("t-new-01", 1, "seq_gap", "why", at_ns=6)
        assert len(copied.security_alerts()) == 2
    finally:
        original.close()
        copied.close()
