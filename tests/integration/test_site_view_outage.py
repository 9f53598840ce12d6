"""The site's terminals learn each other's taps from the gateway's store, not from the NSSO.

Real parts: Mosquitto with the site's TLS, passwords and ACL; a running
:class:`gateway.service.Gateway` whose relay talks HTTP to the CIaO simulator, which is in an
outage; two terminals of one worksite, each its own outbox, uplink and capture, the roof one
with its LEDs and buzzer on gpiozero's MockFactory and a feedback journal.

A worker taps in at the lobby and out at the roof while the NSSO is down. The relay cannot
decide or send anything, yet the roof must know of the lobby's ``in`` (the gateway stored it)
and record ``out``, told as OUT, with no guess flag. When the NSSO is back, it receives ``in``
then ``out``, and the employer has nothing to correct. Before the site view included stored
taps, the roof recorded ``in`` and the gateway later sent it as ``out`` flagged
``direction_corrected``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.registry import Registry
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Flag, Kind
from siteclock.terminal.feedback import Feedback
from tests.support.ciao import (
    CLIENT_ID,
    make_enterprise,
    make_inss,
    rsa_pair,
)
from tests.support.mosquitto import running_broker
from tests.support.site_terminals import Terminal, at, knows, site_gateway_config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SITE = "1Y1003SQ5VSSZ"
LOBBY, ROOF = "t-view-lobby", "t-view-roof"
ANA, ANA_BADGE = "w-ana", "nfc-a:01010101"
BOB, BOB_BADGE = "w-bob", "nfc-a:02020202"
RETRY_AFTER_S = 10


@dataclass
class Site:
    gateway: Gateway
    sim: SimServer
    lobby: Terminal
    roof: Terminal
    journal: Path  # the roof's feedback journal: what the worker was told
    watch: sqlite3.Connection  # the test's own reader of the gateway's file

    def decisions(self, worker: str) -> int:
        sql = "SELECT count(*) FROM worker_sequence WHERE worker_ref=?"
        (count,) = self.watch.execute(sql, (worker,)).fetchone()
        return count

    def relay_waits(self) -> bool:
        """The relay was told to wait (Retry-After): it prepares no batch, decides nothing."""
        client = self.gateway.relay.client  # type: ignore[union-attr]
        return bool(client.not_before > client.clock())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with SimServer(validation_delay_s=0.05) as sim, running_broker(
        tmp_path / "broker", terminals=[LOBBY, ROOF]
    ) as broker:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        # Ended by the test. Its Retry-After makes the relay prepare no batch while it runs
        # (longer than the client waits inside a call, shorter than the test may wait).
        sim.outage(3600.0, status=503, retry_after_s=RETRY_AFTER_S)
        cfg = site_gateway_config(tmp_path, broker, sim)
        db, keys_file = cfg.db, cfg.gateway_keys_file
        registry = Registry(db, cfg.inss_key_path)
        registry.add_workplace(SITE, latitude=50.85, longitude=4.35)
        for i, (ref, badge) in enumerate(((ANA, ANA_BADGE), (BOB, BOB_BADGE))):
            registry.add_worker(ref, ref[2:].title(), inss=make_inss(i + 1),
                                employer=make_enterprise(1))  # fmt: skip
            registry.assign(ref, SITE)
            registry.enrol_badge(badge, ref)
        gateway = Gateway(cfg)
        terminal_registry = TerminalRegistry(db)
        journal = tmp_path / "roof-journal.jsonl"
        feedback = Feedback(27, 22, 17, pin_factory=MockFactory(), journal=journal, tempo=0.01)
        clock = [at("06:00")]
        terminals = []
        for terminal_id in (LOBBY, ROOF):
            signer = Ed25519Signer.generate()
            terminal_registry.register(terminal_id, SITE, public_key=signer.public_key_bytes())
            terminals.append(Terminal(
                terminal_id, tmp_path / f"{terminal_id}.db", signer, SITE, clock, broker,
                keys_file, feedback=feedback if terminal_id == ROOF else None,
            ))  # fmt: skip
        gateway.start(wait_s=10.0)
        for t in terminals:
            t.online()
            wait_for(lambda t=t: t.rosters, f"{t.terminal_id}'s first roster")
        watch = sqlite3.connect(db)
        try:
            yield Site(gateway, sim, *terminals, journal, watch)
        finally:
            watch.close()
            for t in terminals:
                t.close()
            feedback.close()
            gateway.stop()
            terminal_registry.close()
            registry.close()


def test_a_stored_tap_reaches_the_sites_terminals_while_the_nsso_is_down(site: Site) -> None:
    # bob's tap is the relay's first call into the outage: from then on it waits
    site.lobby.tap(BOB_BADGE, at("06:30"))
    wait_for(site.relay_waits, "the relay to be told to wait", timeout=10)

    came_in = site.lobby.tap(ANA_BADGE, at("07:05"))
    assert came_in.kind is Kind.IN
    # The gateway stored it and told the roof, though the relay could decide nothing.
    wait_for(lambda: knows(site.roof, ANA, at("07:05")), "the roof to learn ana's `in`",
             timeout=10)  # fmt: skip
    assert site.decisions(ANA) == 0  # the relay has not decided it: the view came from the store
    assert site.sim.registrations() == []

    went_out = site.roof.tap(ANA_BADGE, at("12:00"))
    assert went_out.kind is Kind.OUT
    assert went_out.signed is not None
    assert Flag.DIRECTION_GUESS not in went_out.signed.event.flags
    told = json.loads(site.journal.read_text().splitlines()[-1])
    assert (told["pattern"], told["direction"]) == ("saved", "out")
    assert told["text"].startswith("OUT")
    # ... and the lobby learns the roof's `out` the same way
    wait_for(lambda: any(d.worker == ANA and d.kind is Kind.OUT and d.wall_ns == at("12:00")
                         for d in site.lobby.rosters[-1].day),
             "the lobby to learn ana's `out`", timeout=10)  # fmt: skip

    site.sim.set_faults(outages=())  # the NSSO is back: the relay catches up
    wait_for(lambda: len(site.sim.registrations()) == 3, "the three taps at the NSSO",
             timeout=RETRY_AFTER_S + 20)  # fmt: skip
    sent = sorted(site.sim.registrations(), key=lambda r: r["registrationDate"])
    assert [r["type"] for r in sent if r["ssin"] == make_inss(1)] == ["in", "out"]
    assert site.decisions(ANA) == 2
    assert site.gateway.site_day.issues() == []  # nothing for the employer to correct
