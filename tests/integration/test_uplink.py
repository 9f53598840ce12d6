"""Terminal uplink against a real Mosquitto and a real gateway intake (in-process).

Real parts only: the project's broker configuration, TLS, per-terminal passwords and ACL, the
real Outbox on SQLite, the real Uplink and Intake. Nothing is mocked.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from siteclock.gateway.intake import Intake
from siteclock.gateway.roster import RosterPublisher, write_gateway_keys
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.gateway.verdicts import VerdictPublisher
from siteclock.keys import Ed25519Signer
from siteclock.protocol import (
    Channel,
    ClockState,
    Flag,
    Kind,
    Outcome,
    Roster,
    RosterEntry,
    Verdict,
    decode_status,
    encode_roster,
    topic,
)
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.mosquitto import (
    MosquittoBroker,
    gateway_config,
    running_broker,
    terminal_config,
)
from tests.support.waiting import wait_until

WORKPLACE = "1Y1003SQ5VSSZ"
CLOCK = ClockState(synced=True, maxerror_us=2000, source="test")
TERMINALS = ["t-alpha", "t-beta"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(tmp_path / "broker", terminals=TERMINALS) as b:
        yield b


class Site:
    """A gateway database with registered terminals, and helpers to build the moving parts."""

    def __init__(self, root: Path, broker: MosquittoBroker) -> None:
        self.root, self.broker = root, broker
        self.db = root / "gateway.db"
        self.registry = TerminalRegistry(self.db)
        self.inbox = Inbox(self.db)
        self.gateway_signer = Ed25519Signer.generate()
        self.gateway_keys = root / "gateway-keys.json"
        write_gateway_keys(self.gateway_keys, [self.gateway_signer])
        self.signers = {t: Ed25519Signer.generate() for t in TERMINALS}
        for tid, signer in self.signers.items():
            self.registry.register(tid, WORKPLACE, public_key=signer.public_key_bytes())
        self.closers: list[Callable[[], None]] = []

    def intake(self) -> Intake:
        intake = Intake(
            gateway_config(self.broker),
            inbox=self.inbox,
            registry=self.registry,
        )
        intake.start()
        self.closers.append(intake.stop)
        return intake

    def outbox(self, tid: str) -> Outbox:
        box = Outbox(
            self.root / f"{tid}.db", signer=self.signers[tid], terminal_id=tid, workplace=WORKPLACE
        )
        self.closers.append(box.close)
        return box

    def uplink(self, tid: str, box: Outbox, rosters: list[Roster] | None = None, **kw) -> Uplink:
        up = Uplink(
            terminal_config(self.broker, tid, gateway_keys_file=self.gateway_keys),
            terminal_id=tid,
            outbox=box,
            status=lambda: {"reader": "ok", "version": "test"},
            on_roster=(rosters.append if rosters is not None else lambda r: None),
            reconnect_max_s=2,
            **kw,
        )
        up.start()
        self.closers.append(up.stop)
        return up

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


@pytest.fixture
def site(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Site]:
    s = Site(tmp_path, broker)
    yield s
    s.close()


def tap(box: Outbox, n: int, badge: str = "nfc-a:04A1B2C3", **kw) -> list[int]:
    return [box.append(kind=Kind.IN, badge=badge, clock=CLOCK, **kw).event.seq for _ in range(n)]


def test_events_are_stored_once_and_marked_delivered_only_by_the_gateway_ack(site: Site) -> None:
    box = site.outbox("t-alpha")
    seqs = tap(box, 5)
    up = site.uplink("t-alpha", box)
    assert wait_until(lambda: up.connected)
    # No gateway yet: the broker takes the messages (PUBACK) but nothing is delivered.
    time.sleep(1.0)
    assert box.stats().depth == 5
    intake = site.intake()
    assert wait_until(lambda: box.stats().depth == 0), up.counters
    assert [r[0] for r in site.inbox.rows("t-alpha")] == seqs
    assert intake.counters["malformed"] == 0


def test_a_backlog_drains_in_order_packed_into_batches(site: Site) -> None:
    box = site.outbox("t-alpha")
    seqs = tap(box, 600)
    site.intake()
    up = site.uplink("t-alpha", box)
    assert wait_until(lambda: box.stats().depth == 0, timeout=30), up.counters
    assert [r[0] for r in site.inbox.rows("t-alpha")] == seqs
    assert up.counters["batches_sent"] < 600 // 10  # packed, not one message per event
    assert site.inbox.gaps() == []


def test_unacknowledged_events_are_resent_after_a_restart(site: Site) -> None:
    box = site.outbox("t-alpha")
    up = site.uplink("t-alpha", box)
    assert wait_until(lambda: up.connected)
    tap(box, 3)
    up.wake()
    assert wait_until(lambda: up.counters["events_sent"] >= 3)
    up.stop()  # the terminal restarts with nothing acknowledged
    assert box.stats().depth == 3
    site.intake()
    up2 = site.uplink("t-alpha", box)
    assert wait_until(lambda: box.stats().depth == 0), up2.counters
    assert site.inbox.count("t-alpha") == 3


def test_an_unknown_badge_is_forwarded_with_its_flag(site: Site) -> None:
    box = site.outbox("t-beta")
    box.append(kind=Kind.IN, badge="nfc-a:DEADBEEF", clock=CLOCK, flags=[Flag.UNKNOWN_BADGE])
    site.intake()
    site.uplink("t-beta", box)
    assert wait_until(lambda: box.stats().depth == 0)
    with sqlite3.connect(site.db) as db:
        (flags,) = db.execute("SELECT flags FROM inbox WHERE terminal='t-beta'").fetchone()
    assert "unknown_badge" in flags


def test_a_signed_roster_is_applied_and_a_forged_one_refused(site: Site) -> None:
    rosters: list[Roster] = []
    box = site.outbox("t-alpha")
    intake = site.intake()
    up = site.uplink("t-alpha", box, rosters)
    assert wait_until(lambda: up.connected)
    entries = [RosterEntry("nfc-a:04A1B2C3", "w-17", "An P.")]
    rosters_out = RosterPublisher(intake.link, site.gateway_signer)
    sent = rosters_out.publish_roster("t-alpha", entries)
    assert wait_until(lambda: len(rosters) == 1)
    assert rosters[0].entries == tuple(entries)
    assert rosters[0].version == sent.version
    # An entry shaped like an INSS never leaves the gateway: it is left out, the rest goes.
    leaky = RosterEntry("nfc-a:01", "90010100123", "x")
    cleaned = rosters_out.publish_roster("t-alpha", [leaky, *entries])
    assert cleaned.entries == tuple(entries)
    assert wait_until(lambda: len(rosters) == 2)
    assert rosters[1].entries == tuple(entries)
    forged = Roster("t-alpha", cleaned.version + 1, (RosterEntry("nfc-a:FF", "w-1", "Mallory"),))
    payload = encode_roster(forged, Ed25519Signer.generate())
    intake.link.publish(topic("t-alpha", Channel.CONFIG), payload, qos=1, retain=True)
    assert wait_until(lambda: up.counters["roster_rejected"] == 1)
    assert len(rosters) == 2


def test_verdicts_reach_the_outbox(site: Site) -> None:
    box = site.outbox("t-alpha")
    [seq] = tap(box, 1)
    intake = site.intake()
    up = site.uplink("t-alpha", box)
    assert wait_until(lambda: box.stats().depth == 0)
    verdicts = VerdictPublisher(intake.link)
    verdicts.send("t-alpha", [Verdict(seq, Outcome.REJECTED, "unknown declaration")])
    assert wait_until(lambda: up.counters["verdicts"] == 1)
    verdict = box.last_verdict_for("nfc-a:04A1B2C3")
    assert verdict is not None
    assert verdict.outcome is Outcome.REJECTED


def test_heartbeat_and_offline_status_are_retained(site: Site, broker: MosquittoBroker) -> None:
    box = site.outbox("t-alpha")
    tap(box, 2)
    intake = site.intake()
    up = site.uplink("t-alpha", box)
    assert wait_until(lambda: box.stats().depth == 0)
    assert wait_until(lambda: intake.stats["heartbeats"] >= 1)
    beat = site.registry.last_heartbeat("t-alpha")
    assert beat is not None
    assert beat["state"] == "online"
    assert "queue_depth" in beat
    up.stop()
    seen: list[dict] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
    watcher.tls_set(ca_certs=str(broker.ca_file))
    watcher.username_pw_set(broker.gateway.username, broker.gateway.password)
    watcher.on_message = lambda c, u, m: seen.append(decode_status(m.payload))
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe(topic("t-alpha", Channel.STATUS), 1)
    watcher.connect(broker.host, broker.gateway_port)
    watcher.loop_start()
    try:
        assert wait_until(lambda: bool(seen))
        assert seen[-1]["state"] == "offline"
    finally:
        watcher.disconnect()
        watcher.loop_stop()


def test_delivered_events_are_pruned_after_the_evidence_window(site: Site) -> None:
    box = site.outbox("t-alpha")
    tap(box, 4)
    site.intake()
    up = site.uplink("t-alpha", box, evidence_window_s=0.0, prune_every_s=0.5)
    assert wait_until(lambda: up.counters["pruned"] == 4), up.counters
    assert box.stats().total == 0
    assert box.stats().depth == 0
