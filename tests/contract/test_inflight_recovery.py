"""What the relays' in-flight recovery relies on, on every backend (migration 6): the relay that
submitted a row is recorded, recovery takes only the rows of the relays named, and a relay's
per-start lease shows whether it is still alive (two database objects stand for two gateway
processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from tests.contract.test_gateway_db import T, event
from tests.support.postgres import PostgresCluster


def _submitted_by(db: GatewayDB, owners: dict[int, str | None]) -> None:
    db.store_events([event(seq) for seq in range(1, 6)])
    db.take_new_events(1, full=True)
    db.set_registrations(
        [((T, seq), {"state": "submitted", "submitted_by": by}) for seq, by in owners.items()]
    )


def test_recovery_takes_only_the_rows_of_the_relays_named(db: GatewayDB) -> None:
    _submitted_by(db, {1: "gw-a-01", 2: "gw-a-01", 3: "gw-b-02", 4: None})
    assert db.submitters() == {"gw-a-01", "gw-b-02", None}
    assert db.recover_submitted(9, []) == 0
    assert db.recover_submitted(9, ["gw-a-01", "gw-gone"]) == 2
    assert db.registration(T, 1)["state"] == "ambiguous"
    assert db.registration(T, 1)["submitted_by"] == "gw-a-01"  # kept: who sent it, for people
    assert db.registration(T, 3)["state"] == "submitted"
    assert db.registration(T, 5)["state"] == "queued"
    assert db.submitters() == {"gw-b-02", None}
    assert db.recover_submitted(10, [None]) == 1  # rows marked before ids were recorded
    assert db.registration(T, 4)["state"] == "ambiguous"
    assert db.recover_submitted(11) == 1  # no names: every submitted row
    assert db.submitters() == set()
    assert db.registration_counts() == {"ambiguous": 4, "queued": 1}


def test_a_per_start_lease_is_abandoned_once_its_holder_stops(
    open_db: Callable[[], GatewayDB],
) -> None:
    live, dead, looking = open_db(), open_db(), open_db()
    assert live.hold_lease("relay.instance.live")
    assert dead.hold_lease("relay.instance.dead")
    assert looking.lease_abandoned("relay.instance.live") is False
    assert looking.lease_abandoned("relay.instance.dead") is False
    dead.close()  # the process dies: the OS (SQLite) or the server (PostgreSQL) frees it
    assert looking.lease_abandoned("relay.instance.dead") is True
    assert looking.lease_abandoned("relay.instance.never-held") is True
    assert looking.lease_abandoned("relay.instance.live") is False  # asking took nothing
    assert live.hold_lease("relay.instance.live")
    live.drop_lease("relay.instance.live")  # a clean stop
    assert looking.lease_abandoned("relay.instance.live") is True


def test_sqlite_leaves_no_lock_file_behind_a_dropped_per_start_lease(tmp_path: Path) -> None:
    from siteclock.gateway.db import SQLiteGatewayDB

    db, other = SQLiteGatewayDB(tmp_path / "gateway.db"), SQLiteGatewayDB(tmp_path / "gateway.db")
    try:
        assert db.hold_lease("relay.instance.a")
        assert db.hold_lease("relay.instance.b")
        assert sorted(p.name for p in tmp_path.glob("*.lease-*")) == [
            "gateway.db.lease-relay.instance.a",
            "gateway.db.lease-relay.instance.b",
        ]
        db.drop_lease("relay.instance.a")
        db.release_lease("relay.instance.b")  # released, not dropped: its file stays
        assert other.lease_abandoned("relay.instance.b") is True  # ...until found abandoned
        assert list(tmp_path.glob("*.lease-*")) == []
    finally:
        db.close()
        other.close()


def test_the_postgresql_lease_session_has_the_server_notice_a_vanished_gateway(
    postgres: PostgresCluster,
) -> None:
    """Without these, a gateway whose host vanished would keep its leases (and its in-flight
    rows) until the operating system's two-hour keepalive."""
    db = PostgresGatewayDB(postgres.fresh_url())
    try:
        assert db.hold_lease("relay.instance.me")
        session = db._lease_conn  # the lease's own session, not a pooled one
        assert session is not None
        shown = {
            name: session.execute(f"SHOW {name}").fetchone()[0]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                         "tcp_keepalives_count", "tcp_user_timeout")
        }  # fmt: skip
        assert shown == {
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "25000",
        }
    finally:
        db.close()
