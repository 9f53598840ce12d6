"""Three gateways on one PostgreSQL behind one broker, sharing the intake through the site's
secret share group, with 100 simulated terminals (``siteclock loadgen``) tapping.

Each gateway is a real ``siteclock gateway`` process. Mid-stream one is SIGKILLed (what the
broker had handed it is never acked, and its session stays in the group until it expires, so
the terminals' resends must find the others) and another is cut from the broker (a TCP proxy
between it and the broker resets its connection and refuses new ones for a while). At the
end: every tap acked to its terminal (the load generator's pending set is empty), each event
stored once, each tap registered exactly once at the CIaO simulator, no gap in any
terminal's sequence.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.app.loadgen import LoadGen, make_identities, register, sim_terminals
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.db.postgres_backend import PostgresGatewayDB
from siteclock.gateway.registry import Registry
from tests.support.ciao import CLIENT_ID, exactly_once_report, make_enterprise, make_inss, rsa_pair
from tests.support.mosquitto import MosquittoBroker, running_broker
from tests.support.postgres import PostgresCluster
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SITE = "1Y1003SQ5VSSZ"
TERMINALS = 100
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(validation_delay_s=0.05) as server:
        server.register_client(CLIENT_ID, rsa_pair()[1])
        yield server


def gateway_toml(root: Path, name: str, broker: MosquittoBroker, port: int, url: str,
                 sim: SimServer) -> Path:  # fmt: skip
    """A ``siteclock gateway`` configuration: the shared database, the site's share group,
    the CIaO simulator with the tests' fast relay timings."""
    key = root / "ciao.pem"
    if not key.exists():
        key.write_bytes(rsa_pair()[0])
        key.chmod(0o600)
    path = root / f"{name}.toml"
    path.write_text(
        f'db = "{root / (name + ".db")}"\n'
        f'database_url = "{url}"\n'
        f'signing_key_file = "{root / "gateway-signing.key"}"\n'
        f'inss_key_file = "{root / "inss.key"}"\n'
        'log_level = "WARNING"\nroster_check_s = 0.5\n'
        "[mqtt]\n"
        f'host = "{broker.host}"\nport = {port}\n'
        f'ca_file = "{broker.ca_file}"\n'
        f'password_file = "{broker.gateway.password_file}"\n'
        f'client_id = "siteclock_gateway-{name}"\n'
        # A short session expiry, as docs/scaling.md advises for a share group: the killed
        # gateway's session leaves the group seconds after it dies.
        f'share_group = "{broker.share_group}"\nkeepalive_s = 5\nsession_expiry_s = 5\n'
        "[ciao]\n"
        f'client_id = "{CLIENT_ID}"\nbase_url = "{sim.url}"\nprivate_key = "{key}"\n'
        "[relay]\nidle_s = 0.02\npoll_interval_s = 0.1\nambiguous_settle_s = 0.2\nrescan_s = 5.0\n"
        "[relay.backoff]\ninitial_wait_s = 0.05\nmax_wait_s = 0.5\n"
    )
    return path


def spawn_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "siteclock.cli", "gateway", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_three_gateways_share_the_intake_through_a_kill_and_a_cut(
    tmp_path: Path, sim: SimServer, postgres: PostgresCluster
) -> None:
    url = postgres.fresh_url()
    identities = make_identities(TERMINALS)
    ids = [i.terminal_id for i in identities]
    with running_broker(tmp_path / "broker", terminals=ids) as broker:
        registry = Registry(url, tmp_path / "inss.key")
        registry.add_workplace(SITE, latitude=50.85, longitude=4.35)
        for n, identity in enumerate(identities):
            worker = f"w-{n}"
            registry.add_worker(
                worker, f"Worker {n}", inss=make_inss(n + 1), employer=make_enterprise(1)
            )
            registry.assign(worker, SITE)
            registry.enrol_badge(identity.badge, worker)
        registry.close()
        register(identities, SITE, url)
        proxy = TcpProxy(broker.host, broker.gateway_port).start()
        ports = {"a": broker.gateway_port, "b": broker.gateway_port, "c": proxy.port}
        procs = {
            name: spawn_gateway(
                gateway_toml(tmp_path, name, broker, port, url, sim), tmp_path / f"{name}.log"
            )
            for name, port in ports.items()
        }
        db = PostgresGatewayDB(url)
        try:
            assert wait_until(lambda: broker.log_tail(400).count("siteclock_gateway-") >= 3, 30)
            report = asyncio.run(_play(broker, identities, procs, proxy))
            assert report["pending"] == 0, report
            taps = report["taps"]
            assert wait_until(lambda: db.registration_counts() == {"registered": taps}, 60), (
                db.registration_counts(),
                taps,
            )
            assert db.count_events() == taps
            assert db.seq_gaps() == []
            assert exactly_once_report(sim.registrations()) == (taps, [])
            assert procs["a"].poll() is None
            assert procs["c"].poll() is None
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proxy.close()
            db.close()


async def _play(broker: MosquittoBroker, identities: list, procs: dict, proxy: TcpProxy) -> dict:
    terminals = sim_terminals(identities, SITE, broker.workdir / "credentials")
    gen = LoadGen(terminals, broker.host, broker.port, ca_file=broker.ca_file, resend_after_s=2.0)
    try:
        await gen.connect_all(concurrency=50)
        await gen.peak(over_s=3.0)  # every worker taps in
        os.kill(procs["b"].pid, signal.SIGKILL)  # mid-stream: one gateway dies
        await gen.peak(over_s=2.0)  # ... and taps go on
        proxy.cut()  # another loses the broker
        await gen.peak(over_s=2.0)
        await asyncio.sleep(3.0)
        proxy.restore()
        await gen.peak(over_s=2.0)
        settled = await gen.settled(timeout=60)
        figures = gen.figures.summary()
        return {
            "settled": settled,
            "pending": gen.pending,
            "taps": sum(t.seq for t in terminals),
            "acked": figures["acked"],
        }
    finally:
        await gen.close()
