"""A relay's instance on a shared database (SQLite here; PostgreSQL in
tests/integration/test_relay_instances_postgres.py): its rows are left alone while it lives,
recovered once it is gone, looked for every ``check_s`` of the relay's clock."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

from siteclock.gateway.relay_instances import RelayInstance, lease_of
from siteclock.gateway.relay_store import RelayStore
from tests.contract.test_gateway_db import T, event
from tests.support.clock import ManualClock

S = 10**9


def _instance(store: RelayStore, clock: ManualClock, counters: Counter[str]) -> RelayInstance:
    return RelayInstance(store, counters, lambda: int(clock() * S), check_s=5.0)


def test_rows_of_a_live_relay_stay_and_a_gone_ones_are_recovered_after_check_s(
    tmp_path: Path,
) -> None:
    clock = ManualClock(1000.0)
    store_a, store_b = RelayStore(tmp_path / "gateway.db"), RelayStore(tmp_path / "gateway.db")
    a = _instance(store_a, clock, Counter())
    store_a.db.store_events([event(seq) for seq in range(1, 5)])
    store_a.take_new(1, full=True)
    store_a.flush([((T, seq), {"state": "submitted", "submitted_by": a.id}) for seq in (1, 2)])
    store_a.flush([((T, 3), {"state": "submitted", "submitted_by": None})])  # before migration 6

    counters: Counter[str] = Counter()
    b = _instance(store_b, clock, counters)  # starting: only the row nobody's
    assert b.recover(starting=True) == 1
    assert store_b.counts() == {"submitted": 2, "ambiguous": 1, "queued": 1}
    assert a.id != b.id
    assert a.id.startswith(socket.gethostname() + "-")  # for the humans reading rows

    a.close()  # A stops with a POST cut short: its rows are still submitted
    assert b.recover() == 0  # checked at start: the next look is check_s later
    clock.now += 5.0
    assert b.recover() == 2
    assert counters["recovered_submitted"] == 3
    assert store_b.counts() == {"ambiguous": 3, "queued": 1}
    assert store_b.get(T, 1)["last_error"] == "relay stopped while submitting"
    assert list(tmp_path.glob(f"*{lease_of(a.id)}")) == []  # no lock file left behind
    b.close()
    store_a.close()
    store_b.close()


def test_a_relay_never_recovers_its_own_rows(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    store = RelayStore(tmp_path / "gateway.db")
    me = _instance(store, clock, Counter())
    store.db.store_events([event(1)])
    store.take_new(1, full=True)
    store.flush([((T, 1), {"state": "submitted", "submitted_by": me.id})])
    clock.now += 60.0
    me.renew()
    assert me.recover() == 0
    assert store.counts() == {"submitted": 1}
    me.close()
    store.close()
