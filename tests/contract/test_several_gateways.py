"""What several gateways on one database rely on, on every backend: two relays never claim the
same row, a lease has one holder at a time, and driver errors arrive as the data layer's own.

Two database objects on one database stand for two gateway processes (on PostgreSQL each has
its own pool of server sessions; on SQLite each its own connection to the file).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from siteclock.gateway.db import GatewayDB, IntegrityError
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from siteclock.gateway.db.schema import MIGRATIONS
from tests.contract.test_gateway_db import T, event
from tests.support.postgres import PostgresCluster

KEYS = [(T, seq) for seq in range(1, 11)]


def _queue_ten(db: GatewayDB) -> None:
    db.store_events([event(seq) for seq in range(1, 11)])
    assert db.take_new_events(1, full=True) == 10


def _claim(db: GatewayDB, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The relay's claim as it runs it: the still-sendable keys, marked submitted, one commit."""
    claimed = db.still_sendable(keys)
    db.set_registrations([(key, {"state": "submitted"}) for key in claimed])
    return claimed


def test_two_relays_never_claim_the_same_row(open_db: Callable[[], GatewayDB]) -> None:
    first, second = open_db(), open_db()
    _queue_ten(first)
    claimed_first: set[tuple[str, int]] = set()
    first_holds = threading.Event()
    second_done = threading.Event()

    def first_relay() -> None:
        with first.atomic():
            claimed_first.update(_claim(first, KEYS[:5]))
            first_holds.set()
            # PostgreSQL: the second relay claims past our locked rows meanwhile. SQLite: it
            # waits for our commit (one writer at a time), so we stop waiting after a second.
            second_done.wait(1.0)

    thread = threading.Thread(target=first_relay)
    thread.start()
    assert first_holds.wait(10)
    with second.atomic():
        claimed_second = _claim(second, KEYS)  # asks for all ten while the first holds five
    second_done.set()
    thread.join(10)

    assert claimed_first == set(KEYS[:5])
    assert claimed_second == set(KEYS[5:])
    assert second.registration_counts() == {"submitted": 10}


def test_a_lease_has_one_holder_until_released_or_closed(
    open_db: Callable[[], GatewayDB],
) -> None:
    first, second = open_db(), open_db()
    assert first.hold_lease("rosters")
    assert first.hold_lease("rosters")  # asking again while holding: still held
    assert not second.hold_lease("rosters")
    assert second.hold_lease("polling")  # another lease is another holder's
    first.release_lease("rosters")
    assert second.hold_lease("rosters")
    assert not first.hold_lease("rosters")
    second.close()  # a gateway that stops (or dies) frees its leases
    assert first.hold_lease("rosters")
    assert first.hold_lease("polling")


def test_a_refused_row_raises_the_data_layers_integrity_error(db: GatewayDB) -> None:
    db.store_events([event(1)])
    with pytest.raises(IntegrityError):
        db.store_events([event(1)])
    assert db.count_events() == 1


def test_gateways_opening_a_new_database_at_once_migrate_it_once(
    open_db: Callable[[], GatewayDB],
) -> None:
    opened: list[GatewayDB] = []
    failures: list[BaseException] = []

    def start_gateway() -> None:
        try:
            opened.append(open_db())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start_gateway) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(opened) == 4
    assert {db.schema_version() for db in opened} == {MIGRATIONS[-1].version}
    with opened[0].reading() as conn:  # type: ignore[attr-defined]
        (recorded,) = conn.execute("SELECT count(*) FROM schema_version").fetchone()
    assert recorded == len(MIGRATIONS)


def test_leases_of_two_sites_in_one_postgresql_database_are_apart(
    postgres: PostgresCluster,
) -> None:
    """Two sites' gateways kept in two schemas of one database: each site has its own leases."""
    first, second = PostgresGatewayDB(postgres.fresh_url()), PostgresGatewayDB(postgres.fresh_url())
    try:
        assert first.hold_lease("rosters")
        assert second.hold_lease("rosters")
    finally:
        first.close()
        second.close()
