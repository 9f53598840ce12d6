"""A day on one worksite, replayed through real parts: each worker gets exactly the right CIaO
``type`` sequence, and what cannot be made right is flagged for the employer.

Real parts throughout: Mosquitto with the site's TLS, passwords and ACL; a running
:class:`gateway.service.Gateway` with its relay to the CIaO simulator over HTTP; the employer's
badge enrolment (:func:`provisioning.gateway.badge_enrolment.link_next_tap`); and three
terminals, each its own outbox, :class:`terminal.uplink.Uplink` and
:class:`terminal.capture.Capture` (what ``siteclock terminal`` runs). The terminals' wall clocks
are injected: the day (and the morning before it) is replayed in seconds, two days in the past
so the simulator takes every date.

* lobby and roof are on the site all day; office comes from another worksite (a rebind) and
  is offline for an hour in the afternoon;
* ana: an installer's self-test with her badge, then in at the lobby, out at the roof (the roof
  learns her ``in`` through the gateway), in, and an ``out`` at the offline office that reaches
  the gateway after her later ``out`` at the lobby was already sent (``late``);
* bob: tapped in yesterday and forgot to tap out: this morning starts with ``in`` (``missing_out``);
* cor: in at the office on the old site yesterday, then in on the new site after its rebind,
  out at the office while it is offline (a flagged guess), back in and out at the others;
* dan: his new badge is linked by tapping it (never sent), then in and out.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.registry import Registry
from siteclock.gateway.sequence import Issue
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Flag, Kind
from siteclock.provisioning.gateway.badge_enrolment import link_next_tap
from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key
from siteclock.terminal.capture import TapResult
from tests.support.ciao import (
    CLIENT_ID,
    make_enterprise,
    make_inss,
    rsa_pair,
)
from tests.support.mosquitto import running_broker
from tests.support.site_terminals import DAY, SYNCED, Terminal, at, knows, site_gateway_config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SITE, OLD_SITE = "1Y1003SQ5VSSZ", "2Y1003SQ5VSSZ"
LOBBY, ROOF, OFFICE = "t-day-lobby", "t-day-roof", "t-day-office"
NEW_BADGE = "nfc-a:0D0D0D0D"


@dataclass
class Site:
    db: Path
    gateway: Gateway
    sim: SimServer
    workers: Workers
    refs: dict[str, str]
    badges: dict[str, str]
    terminals: dict[str, Terminal]
    watch: sqlite3.Connection  # the test's own reader of the gateway's file

    def state(self, terminal_id: str, seq: int) -> str:
        sql = "SELECT state FROM registrations WHERE terminal=? AND seq=?"
        return self.watch.execute(sql, (terminal_id, seq)).fetchone()[0]

    def decided(self, terminal_id: str, seq: int) -> tuple[str, str] | None:
        """(CIaO type sent, issues) once the gateway's sequence check decided this event."""
        return self.watch.execute(
            "SELECT ciao_type, issues FROM worker_sequence WHERE terminal=? AND seq=?",
            (terminal_id, seq),
        ).fetchone()

    def settle(self, result: TapResult, worker: str | None) -> tuple[str, str]:
        """Wait until the tap was relayed and every online terminal's roster knows it."""
        event = result.signed.event  # type: ignore[union-attr]
        decided = wait_for(lambda: self.decided(event.terminal_id, event.seq), "a decision")
        if worker is not None:
            for t in self.terminals.values():
                if t.uplink is not None and t.workplace == event.workplace:
                    wait_for(lambda t=t: knows(t, self.refs[worker], event.wall_ns),
                             f"{t.terminal_id} to learn {worker}'s tap")  # fmt: skip
        return decided

    def by_worker(self) -> dict[str, list[tuple[str, str, str]]]:
        """What the NSSO holds: per worker, (workplace, "day HH:MM", type) in time order, the
        day relative to the replayed one (``-1`` the day before)."""
        names = {make_inss(i + 1): name for i, name in enumerate(self.refs)}
        out: dict[str, list[tuple[str, str, str]]] = {}
        for r in sorted(self.sim.registrations(), key=lambda r: r["registrationDate"]):
            moment = dt.datetime.fromisoformat(r["registrationDate"].replace("Z", "+00:00"))
            label = f"{(moment.date() - DAY.date()).days:+d} {moment:%H:%M}"
            out.setdefault(names[r["ssin"]], []).append(
                (r["contractualRelationshipReference"], label, r["type"])
            )
        return out


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with SimServer(validation_delay_s=0.05) as sim, running_broker(
        tmp_path / "broker", terminals=[LOBBY, ROOF, OFFICE]
    ) as broker:
        sim.register_client(CLIENT_ID, rsa_pair()[1])
        cfg = site_gateway_config(tmp_path, broker, sim)
        db, keys_file = cfg.db, cfg.gateway_keys_file
        registry = Registry(db, cfg.inss_key_path)
        registry.add_workplace(SITE, latitude=50.85, longitude=4.35)
        registry.add_workplace(OLD_SITE, latitude=50.80, longitude=4.30)
        refs, badges = {}, {}
        for i, name in enumerate(("ana", "bob", "cor", "dan")):
            ref = f"w-{name}"
            registry.add_worker(ref, name.title(), inss=make_inss(i + 1),
                                employer=make_enterprise(1))  # fmt: skip
            registry.assign(ref, SITE)
            refs[name] = ref
            if name != "dan":  # dan's badge is linked during the day, by tapping it
                badges[name] = f"nfc-a:0{i + 1}0{i + 1}0{i + 1}0{i + 1}"
                registry.enrol_badge(badges[name], ref)
        registry.assign(refs["cor"], OLD_SITE)
        gateway = Gateway(cfg)
        terminal_registry = TerminalRegistry(db)
        clock = [at("06:00", day=-1)]
        terminals: dict[str, Terminal] = {}
        for terminal_id, workplace in ((LOBBY, SITE), (ROOF, SITE), (OFFICE, OLD_SITE)):
            signer = Ed25519Signer.generate()
            terminal_registry.register(terminal_id, workplace, public_key=signer.public_key_bytes())
            terminals[terminal_id] = Terminal(terminal_id, tmp_path / f"{terminal_id}.db", signer,
                                              workplace, clock, broker, keys_file)  # fmt: skip
        gateway.start(wait_s=10.0)
        for t in terminals.values():
            t.online()
            wait_for(lambda t=t: t.rosters, f"{t.terminal_id}'s first roster")
        workers = Workers(gateway.registry, load_or_create_ref_key(tmp_path / "ref.key"))
        watch = sqlite3.connect(db)
        try:
            yield Site(db, gateway, sim, workers, refs, badges, terminals, watch)
        finally:
            watch.close()
            for t in terminals.values():
                t.close()
            gateway.stop()
            terminal_registry.close()
            registry.close()


def test_a_day_on_site_sends_each_worker_the_right_types(site: Site) -> None:
    lobby, roof, office = (site.terminals[t] for t in (LOBBY, ROOF, OFFICE))
    ana, bob, cor = (site.badges[n] for n in ("ana", "bob", "cor"))

    def tap(t: Terminal, badge: str, hhmm: str, *, day: int = 0, worker: str | None = None):
        result = t.tap(badge, at(hhmm, day=day))
        return result, site.settle(result, worker)

    # ---- the day before: bob taps in and never out; cor works on the old site
    first, _ = tap(lobby, bob, "07:00", day=-1, worker="bob")
    assert first.kind is Kind.IN
    old, _ = tap(office, cor, "20:00", day=-1, worker="cor")
    assert (old.kind, old.signed.event.workplace) == (Kind.IN, OLD_SITE)

    # ---- the office terminal is moved to this site (its outbox keeps cor's `in` there, less
    # than a shift before his first tap here: only the rebind makes that tap an `in`)
    registry = TerminalRegistry(site.db)
    registry.rebind(OFFICE, SITE, reason="moved to the new site")
    registry.close()
    moved = time.time_ns()
    office.rebind(SITE)
    wait_for(lambda: office.rosters and office.rosters[-1].version > moved,
             "the office's roster for the new site")  # fmt: skip

    # ---- morning: an installer's self-test with ana's badge is not her `in`
    lobby.clock[0] = at("06:55")
    # recorded as provisioning.terminal.selftest records it: kind `in`, flag `selftest`
    selftest = lobby.outbox.append(kind=Kind.IN, badge=ana, clock=SYNCED, wall_ns=at("06:55"),
                                   flags=[Flag.SELFTEST])  # fmt: skip
    ana_in, decided = tap(lobby, ana, "07:05", worker="ana")
    assert ana_in.kind is Kind.IN
    assert decided == ("in", "")
    # bob forgot yesterday's `out`: a new shift starts with `in`, the `out` is for the employer
    bob_in, decided = tap(roof, bob, "07:10", worker="bob")
    assert bob_in.kind is Kind.IN
    assert Flag.MISSING_OUT in bob_in.signed.event.flags
    assert decided == ("in", Issue.MISSING_OUT)
    # cor's first tap after the rebind: the old site's `in` does not carry over
    cor_in, decided = tap(office, cor, "07:15", worker="cor")
    assert cor_in.kind is Kind.IN
    assert decided == ("in", "")

    # ---- dan's new badge is linked by tapping it at the lobby: that tap is not attendance
    linked: list[str] = []
    started = time.time_ns()
    linker = threading.Thread(target=lambda: linked.append(link_next_tap(
        site.db, site.workers, worker_ref=site.refs["dan"], terminal_id=LOBBY,
        since_ns=started, timeout_s=20,
    )))  # fmt: skip
    linker.start()
    enrolment = lobby.tap(NEW_BADGE, at("07:20"))
    assert enrolment.pattern == "unknown_badge"
    linker.join(25)
    assert linked == [NEW_BADGE]
    wait_for(lambda: any(e.badge == NEW_BADGE for e in lobby.rosters[-1].entries),
             "the lobby to know dan's badge")  # fmt: skip
    dan_in, decided = tap(lobby, NEW_BADGE, "07:25", worker="dan")
    assert dan_in.kind is Kind.IN
    assert decided == ("in", "")

    # ---- noon: ana taps out at the roof, which knows her `in` at the lobby through the gateway
    ana_out, decided = tap(roof, ana, "12:00", worker="ana")
    assert ana_out.kind is Kind.OUT
    assert decided == ("out", "")
    ana_back, _ = tap(lobby, ana, "12:30", worker="ana")
    assert ana_back.kind is Kind.IN

    # ---- the office is offline for an hour: it decides from what it knows, and says so
    office.offline()
    cor_out = office.tap(cor, at("13:10"))
    assert cor_out.kind is Kind.OUT
    assert Flag.DIRECTION_GUESS in cor_out.signed.event.flags
    ana_office = office.tap(ana, at("13:20"))  # the office knew her 12:30 `in` from its roster
    assert ana_office.kind is Kind.OUT
    ana_lobby, decided = tap(lobby, ana, "13:50", worker="ana")  # the lobby never heard of it
    assert ana_lobby.kind is Kind.OUT
    assert decided == ("out", "")
    office.online()  # 14:10: the office's hour of taps reaches the gateway
    assert site.settle(cor_out, "cor") == ("out", "")
    assert site.settle(ana_office, None) == ("out", Issue.LATE)  # her 13:50 had gone already

    # ---- afternoon: everyone ends the day; the sites' terminals know the office's taps now
    cor_back, _ = tap(lobby, cor, "16:00", worker="cor")
    assert cor_back.kind is Kind.IN  # after the `out` the lobby learned from the office
    cor_end, _ = tap(roof, cor, "17:00", worker="cor")
    dan_end, _ = tap(roof, NEW_BADGE, "15:00", worker="dan")
    bob_end, _ = tap(lobby, bob, "16:30", worker="bob")
    assert (cor_end.kind, dan_end.kind, bob_end.kind) == (Kind.OUT, Kind.OUT, Kind.OUT)

    # ---- what the NSSO got: exactly these types, per worker, in time order
    wait_for(lambda: len(site.sim.registrations()) == 15, "15 registrations at the NSSO")
    assert site.by_worker() == {
        "ana": [(SITE, "+0 07:05", "in"), (SITE, "+0 12:00", "out"), (SITE, "+0 12:30", "in"),
                (SITE, "+0 13:20", "out"), (SITE, "+0 13:50", "out")],
        "bob": [(SITE, "-1 07:00", "in"), (SITE, "+0 07:10", "in"), (SITE, "+0 16:30", "out")],
        "cor": [(OLD_SITE, "-1 20:00", "in"), (SITE, "+0 07:15", "in"),
                (SITE, "+0 13:10", "out"), (SITE, "+0 16:00", "in"), (SITE, "+0 17:00", "out")],
        "dan": [(SITE, "+0 07:25", "in"), (SITE, "+0 15:00", "out")],
    }  # fmt: skip
    # the self-test and the enrolment tap were kept as evidence, never sent
    assert site.state(LOBBY, selftest.event.seq) == "selftest"
    assert site.state(LOBBY, enrolment.signed.event.seq) == "enrolment"
    # the employer's list: bob's missing `out`, ana's late tap, and nothing else
    issues = [(i["worker_ref"], i["issues"]) for i in site.gateway.site_day.issues()]
    assert issues == [("w-bob", [Issue.MISSING_OUT]), ("w-ana", [Issue.LATE])]
