"""Two gateways on one PostgreSQL database behind one real broker, with real terminals tapping.

Both gateways take in the terminals' events (idempotent on terminal+seq, whichever stores
first), both relay to the CIaO simulator (claims skip each other's rows), one publishes the
rosters (the lease). The first gateway then stops mid-day: the second takes over the roster
lease, and the taps after it still reach the NSSO. At the end every tap is registered exactly
once, every terminal's outbox is empty, and the database holds each event once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from siteclock.gateway.registry import Registry
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from tests.support.ciao import CLIENT_ID, exactly_once_report, make_enterprise, make_inss, rsa_pair
from tests.support.mosquitto import gateway_config, running_broker
from tests.support.postgres import PostgresCluster
from tests.support.site_terminals import Terminal, at, site_gateway_config
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.slow

SITE = "1Y1003SQ5VSSZ"
TERMINALS = ("t-gate-01", "t-gate-02")
BADGES = [f"nfc-a:0A0B0C{i:02X}" for i in range(1, 5)]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(validation_delay_s=0.05) as server:
        server.register_client(CLIENT_ID, rsa_pair()[1])
        yield server


def test_two_gateways_on_one_database_lose_nothing_and_send_nothing_twice(
    tmp_path: Path, sim: SimServer, postgres: PostgresCluster
) -> None:
    url = postgres.fresh_url()
    with running_broker(tmp_path / "broker", terminals=list(TERMINALS)) as broker:
        base = dataclasses.replace(site_gateway_config(tmp_path, broker, sim), database_url=url)
        registry = Registry(url, base.inss_key_path)
        registry.add_workplace(SITE, latitude=50.85, longitude=4.35)
        for i, badge in enumerate(BADGES):
            registry.add_worker(f"w-{i}", f"Worker {i}", inss=make_inss(i + 1),
                                employer=make_enterprise(1))  # fmt: skip
            registry.assign(f"w-{i}", SITE)
            if i < 3:  # the fourth badge is enrolled later, while only the second gateway runs
                registry.enrol_badge(badge, f"w-{i}")
        terminal_registry = TerminalRegistry(url)
        clock = [at("06:00")]
        terminals: list[Terminal] = []
        for terminal_id in TERMINALS:
            signer = Ed25519Signer.generate()
            terminal_registry.register(terminal_id, SITE, public_key=signer.public_key_bytes())
            terminals.append(Terminal(terminal_id, tmp_path / f"{terminal_id}.db", signer, SITE,
                                      clock, broker, base.gateway_keys_file))  # fmt: skip
        gateways = [
            Gateway(dataclasses.replace(base, mqtt=gateway_config(broker))) for _ in range(2)
        ]
        db = PostgresGatewayDB(url)
        try:
            for gateway in gateways:
                gateway.start(wait_s=10.0)
            for t in terminals:
                t.online()
                wait_for(lambda t=t: t.rosters, f"{t.terminal_id}'s first roster")
            taps = 0
            for minute in range(12):  # the morning: three workers tap at both terminals
                terminal = terminals[minute % 2]
                terminal.tap(BADGES[minute % 3], at(f"07:{minute * 4:02d}"))
                taps += 1

            gateways[0].stop()  # the first gateway goes away mid-day
            registry.enrol_badge(BADGES[3], "w-3")  # the second must publish this roster
            for t in terminals:
                wait_for(lambda t=t: any(e.badge == BADGES[3] for e in t.rosters[-1].entries),
                         f"{t.terminal_id}'s roster with the new badge")  # fmt: skip
            for minute in range(6):  # the afternoon, on the second gateway only
                terminals[minute % 2].tap(BADGES[minute % 4], at(f"13:{minute * 4:02d}"))
                taps += 1

            def delivered() -> bool:
                return (
                    all(t.outbox.stats().depth == 0 for t in terminals)
                    and len(sim.registrations()) >= taps
                )

            assert wait_until(delivered, timeout=90), (
                [t.outbox.stats() for t in terminals],
                db.registration_counts(),
            )
            assert wait_until(lambda: db.registration_counts() == {"registered": taps}, 60), (
                db.registration_counts()
            )
            assert exactly_once_report(sim.registrations()) == (taps, [])
            assert db.count_events() == taps
            assert db.seq_gaps() == []
        finally:
            for t in terminals:
                t.close()
            for gateway in gateways:
                gateway.stop()
            db.close()
            terminal_registry.close()
            registry.close()
