"""Issue 9: one stolen terminal cannot stop a site's intake.

A real Mosquitto configured exactly as ``siteclock broker-config`` writes it, a real gateway
intake and SQLite file, and raw MQTT clients holding terminals' real broker credentials: an
honest terminal, and a compromised one (its SD card read: broker password and signing key).
Each finding of the issue this side owns is a test here that fails on the code before the fix:

- finding 2: poison status messages and signed events with out-of-range integers halted the
  intake for everyone (the group failed, nothing was PUBACKed, the broker's in-flight window to
  the gateway filled, and it stayed stuck across a restart as the broker redelivered);
- finding 3: no intake size limit per message kind (a huge heartbeat was parsed and stored);
- finding 7: every CBOR tag was decoded, the regular-expression tag included;
- finding 9: no per-terminal budget, so junk signatures could saturate the intake;
- finding 12: broken hash-chain links and gaps were stored and acked without an alert;
- finding 14 (second half, heartbeats setting clock corrections) is in test_clock_correction.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cbor2
import pytest

from siteclock import protocol as p
from siteclock.gateway.config import MqttConfig
from siteclock.gateway.intake import REFUSED_BURST, REFUSED_PER_S, Intake
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.terminal.outbox import Outbox
from siteclock.terminal.uplink import Uplink
from tests.support.inbox import TerminalFeed
from tests.support.mosquitto import (
    MosquittoBroker,
    gateway_config,
    running_broker,
    terminal_config,
)
from tests.support.raw_client import Flooder
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

WORKPLACE = "1Y1003SQ5VSSZ"
POISON = 250
"""More poison messages than the broker's in-flight window to the gateway (200): before the
fix, as many unacknowledged poison messages as that window stopped all delivery."""
STUCK_S = 15.0
"""How long a good event may take to get through while poison is being refused."""
S = 10**9


class FakeClock:
    """The intake's monotonic clock, moved by the test (budgets and gap grace)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    broker: MosquittoBroker
    db: Path
    inbox: Inbox
    registry: TerminalRegistry
    intake: Intake
    honest: TerminalFeed
    evil: TerminalFeed
    honest_link: Flooder
    evil_link: Flooder

    def restart_intake(self, **options: object) -> None:
        """Stop the gateway's intake and start a new one on the same persistent session."""
        cfg = self.intake.cfg
        self.intake.stop()
        self.intake = Intake(cfg, inbox=self.inbox, registry=self.registry, **options)  # type: ignore[arg-type]
        self.intake.start()

    def good_event_gets_through(self) -> int:
        """An honest event, published after the poison: stored and acked. Returns its seq."""
        signed = self.honest.event("in", "nfc-a:04A1B2C3", time.time_ns())
        self.honest_link.send(
            p.topic(self.honest.terminal_id, p.Channel.EVENTS), [p.encode_batch([signed])]
        )
        seq = signed.event.seq
        assert wait_until(lambda: seq in self.honest_link.stored, timeout=STUCK_S), (
            f"the honest event {seq} was not acked: {self.intake.counters}"
        )
        assert [s for s, _, _ in self.inbox.rows(self.honest.terminal_id)][-1] == seq
        return seq


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_broker(tmp_path / "broker", terminals=["t-honest", "t-evil"]) as broker:
        db = tmp_path / "gateway.db"
        inbox, registry = Inbox(db), TerminalRegistry(db)
        honest, evil = TerminalFeed("t-honest", WORKPLACE), TerminalFeed("t-evil", WORKPLACE)
        for feed in (honest, evil):
            registry.register(
                feed.terminal_id, WORKPLACE, public_key=feed.signer.public_key_bytes()
            )
        intake = Intake(
            gateway_config(broker, client_id="siteclock_gateway-hostile"),
            inbox=inbox,
            registry=registry,
        )
        intake.start()
        honest_link = Flooder(broker, "t-honest", "t-honest")
        honest_link.listen_acks()
        evil_link = Flooder(broker, "t-evil", "t-evil")
        evil_link.listen_acks()
        world = Site(broker, db, inbox, registry, intake, honest, evil, honest_link, evil_link)
        try:
            yield world
        finally:
            honest_link.close()
            evil_link.close()
            world.intake.stop()


def heartbeat(**overrides: object) -> dict[str, object]:
    status: dict[str, object] = {
        "state": "online", "queue_depth": 0, "boot_id": "boot-1", "boot_ns": 5 * S,
        "wall_ns": time.time_ns(), "clock": p.ClockState(True, 2000, "ntp").to_map(),
    }  # fmt: skip
    status.update(overrides)
    return status


# ------------------------------------------------------------------------------ finding 2

POISON_STATUSES = {
    "deeply_nested": b'{"state":"online","x":' + b"[" * 1990 + b"]" * 1990 + b"}",
    "5000_digits": b'{"state":"online","queue_depth":' + b"9" * 5000 + b"}",
    "timestamp_2_64": json.dumps(heartbeat(wall_ns=2**64, boot_ns=2**64)).encode(),
}


@pytest.mark.parametrize("kind", sorted(POISON_STATUSES))
def test_poison_status_does_not_hold_up_another_terminals_events(site: Site, kind: str) -> None:
    site.evil_link.send(p.topic("t-evil", p.Channel.STATUS), [POISON_STATUSES[kind]] * POISON)
    site.good_event_gets_through()
    refused = site.intake.counters
    judged = ("bad_status", "status_too_large")
    assert wait_until(
        lambda: sum(refused[r] for r in (*judged, "rate_limited")) == POISON, timeout=STUCK_S
    ), refused
    assert sum(refused[r] for r in judged) >= 1
    assert refused["unprocessable"] == 0
    assert site.registry.last_heartbeat("t-evil") is None

    # A restart: nothing the broker redelivers is poison any more, the intake goes on.
    site.restart_intake()
    site.good_event_gets_through()


def test_signed_events_with_out_of_range_integers_are_refused_alone(site: Site) -> None:
    """The compromised terminal holds its signing key: signatures verify, integers do not fit
    SQLite (seq 2**64 - 1, wall_ns 2**63); each is refused, the honest terminal flows."""
    evil = site.evil
    poison = []
    for i in range(POISON):
        huge = p.Event(
            "t-evil", WORKPLACE, 2**64 - 1 - i if i % 2 else 1, p.GENESIS_HASH, f"x-{i}",
            p.Kind.IN, "nfc-a:04A1", 2**63 + i if i % 2 == 0 else 1, "boot-1", 1,
            p.ClockState(True, 1, "ntp"),
        )  # fmt: skip
        poison.append(p.encode_batch([p.sign_event(huge, evil.signer)]))
    site.evil_link.send(p.topic("t-evil", p.Channel.EVENTS), poison)
    site.good_event_gets_through()
    counts = site.intake.counters
    assert wait_until(
        lambda: counts["out_of_range"] + counts["rate_limited"] == POISON, timeout=STUCK_S
    ), counts
    assert counts["out_of_range"] >= REFUSED_BURST  # judged until its budget ran out
    assert site.inbox.count("t-evil") == 0
    assert site.evil_link.stored == set()


def test_an_event_sqlite_refuses_is_isolated_to_its_own_message(tmp_path: Path) -> None:
    """Whatever else might make SQLite refuse one event (here a real trigger in the gateway's
    file), the group is stored message by message and only that message is refused."""
    db = tmp_path / "gateway.db"
    registry, inbox = TerminalRegistry(db), Inbox(db)
    feeds = [TerminalFeed(f"t-iso-{i}", WORKPLACE) for i in range(3)]
    for feed in feeds:
        registry.register(feed.terminal_id, WORKPLACE, public_key=feed.signer.public_key_bytes())
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON inbox WHEN NEW.terminal = 't-iso-1' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    intake = Intake(MqttConfig(), inbox=inbox, registry=registry)  # never connected
    messages = [
        (p.topic(f.terminal_id, p.Channel.EVENTS), p.encode_batch([f.event("in", "nfc-a:01", 1)]))
        for f in feeds
    ]
    handled = intake.handle_many(messages)
    assert [h.ack_seqs for h in handled] == [[1], [], [1]]
    assert intake.counters["unstorable"] == 1
    assert (inbox.count("t-iso-0"), inbox.count("t-iso-1"), inbox.count("t-iso-2")) == (1, 0, 1)


# ------------------------------------------------------------------------------ finding 3


def test_intake_sizes_per_message_kind(site: Site) -> None:
    """A heartbeat larger than its limit is neither parsed nor stored (one of 64 MB was)."""
    site.evil_link.send(p.topic("t-evil", p.Channel.STATUS), [p.encode_status(heartbeat())])
    assert wait_until(lambda: site.registry.last_heartbeat("t-evil") is not None)
    huge = p.encode_status(heartbeat(pad="x" * (200 * 1024)))
    site.evil_link.send(p.topic("t-evil", p.Channel.STATUS), [huge])
    assert wait_until(lambda: site.intake.counters["status_too_large"] == 1)
    assert "pad" not in (site.registry.last_heartbeat("t-evil") or {})
    # Larger than any message of the protocol: the broker refuses it (its max_packet_size closes
    # the sender's connection; QoS 0, so paho does not resend it after reconnecting) and the
    # gateway never sees it.
    site.evil_link.client.publish(p.topic("t-evil", p.Channel.STATUS), b"{" * (4 * 2**20), qos=0)
    site.evil_link.send(p.topic("t-evil", p.Channel.STATUS), [p.encode_status(heartbeat(n=2))])
    assert wait_until(lambda: (site.registry.last_heartbeat("t-evil") or {}).get("n") == 2)
    assert site.intake.counters["status_too_large"] == 1
    assert site.intake.stats["messages"] == 3  # the 4 MB one never reached the gateway
    site.good_event_gets_through()


def test_events_payload_and_event_body_limits(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    registry, evil = TerminalRegistry(db), TerminalFeed("t-evil", WORKPLACE)
    registry.register("t-evil", WORKPLACE, public_key=evil.signer.public_key_bytes())
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected
    events = p.topic("t-evil", p.Channel.EVENTS)
    intake.handle(events, b"\xa0" * (p.MAX_PAYLOAD_BYTES + 1))
    fat = p.Envelope(b"\x00" * (p.MAX_EVENT_BODY_BYTES + 1), "ed25519", evil.signer.kid, b"s")
    intake.handle(events, p.encode_batch([p.SignedEvent(fat)]))
    intake.handle(p.topic("t-evil", p.Channel.STATUS), b" " * (p.MAX_STATUS_BYTES + 1))
    assert intake.counters["too_large"] == 2
    assert intake.counters["status_too_large"] == 1


# ------------------------------------------------------------------------------ finding 7


def test_cbor_tags_are_refused_before_decoding(site: Site) -> None:
    """The regular-expression tag (and any other: dates, big numbers) never reaches a decoder,
    at the top of a message or inside a signed event body."""
    regex = cbor2.dumps({"v": 1, "events": [re.compile("(a|aa)*b" * 50)]})
    body = cbor2.loads(site.evil.event("in", "nfc-a:04A1", time.time_ns()).envelope.body)
    body["wall_ns"] = cbor2.CBORTag(1, 1_700_000_000)  # an epoch date instead of an integer
    tagged_body = p.seal(cbor2.dumps(body, canonical=True), site.evil.signer)
    inner = p.encode_batch([p.SignedEvent(tagged_body)])
    site.evil_link.send(p.topic("t-evil", p.Channel.EVENTS), [regex] * 20 + [inner] * 20)
    assert wait_until(lambda: site.intake.counters["cbor_tag"] == 40), site.intake.counters
    assert site.inbox.count("t-evil") == 0
    site.good_event_gets_through()


# ------------------------------------------------------------------------------ finding 9


def test_signature_flood_is_bounded_per_terminal_and_others_flow(site: Site) -> None:
    messages, per_message = 50, 400
    body = site.evil.event("in", "nfc-a:04A1", time.time_ns()).envelope.body
    flood = [
        p.encode_batch([
            p.SignedEvent(p.Envelope(body, "ed25519", site.evil.signer.kid, os.urandom(64)))
            for _ in range(per_message)
        ])
        for _ in range(messages)
    ]  # fmt: skip
    started = time.monotonic()
    site.evil_link.send(p.topic("t-evil", p.Channel.EVENTS), flood)
    good = [site.good_event_gets_through() for _ in range(5)]
    counts = site.intake.counters
    assert wait_until(lambda: site.intake.stats["messages"] >= messages + len(good)), counts
    elapsed = time.monotonic() - started
    # Every signature checked was paid for: the burst, the refill, and one batch over.
    assert counts["bad_signature"] <= REFUSED_BURST + REFUSED_PER_S * elapsed + per_message
    assert counts["bad_signature"] < messages * per_message / 2
    assert counts["rate_limited"] > 0
    assert [t for t, _, _ in site.inbox.alerts("rate_limited")] == ["t-evil"]
    assert set(good) <= site.honest_link.stored


def test_an_honest_backlog_drain_is_never_rate_limited(site: Site, tmp_path: Path) -> None:
    """A terminal back from days offline drains thousands of events as fast as the gateway
    acks them: good events cost no budget, so none is refused or slowed."""
    box = Outbox(tmp_path / "t-honest.db", signer=site.honest.signer, terminal_id="t-honest",
                 workplace=WORKPLACE)  # fmt: skip
    backlog = 2500  # more than a group admits, many times the budget of refusals
    for _ in range(backlog):
        box.append(kind=p.Kind.IN, badge="nfc-a:04A1", clock=p.ClockState(True, 1, "ntp"))
    site.honest_link.close()
    uplink = Uplink(
        terminal_config(site.broker, "t-honest", max_batch=500), terminal_id="t-honest",
        outbox=box, status=dict, on_roster=lambda r: None,
    )  # fmt: skip
    uplink.start()
    try:
        assert wait_until(lambda: box.stats().depth == 0, timeout=60), (
            uplink.counters,
            site.intake.counters,
            site.intake.stats,
            box.stats(),
        )
    finally:
        uplink.stop()
        box.close()
    assert site.inbox.count("t-honest") == backlog
    assert site.intake.counters["rate_limited"] == 0
    assert site.inbox.alerts() == []


def test_a_real_terminal_signs_its_clock_readings_and_the_gateway_uses_them(
    site: Site, tmp_path: Path
) -> None:
    """Finding 14, second half, end to end: the uplink attaches a clock proof to a synced
    heartbeat, and only that makes the gateway keep a sync point for the boot."""
    box = Outbox(tmp_path / "t-honest.db", signer=site.honest.signer, terminal_id="t-honest",
                 workplace=WORKPLACE)  # fmt: skip
    reading = heartbeat(boot_id="boot-9", boot_ns=60 * S, wall_ns=1_736_926_260 * S)
    site.honest_link.close()
    uplink = Uplink(
        terminal_config(site.broker, "t-honest"), terminal_id="t-honest", outbox=box,
        status=lambda: dict(reading), on_roster=lambda r: None,
    )  # fmt: skip
    uplink.start()
    try:
        assert wait_until(lambda: site.registry.sync_point("t-honest", "boot-9") is not None)
        assert p.CLOCK_PROOF_FIELD in (site.registry.last_heartbeat("t-honest") or {})
    finally:
        uplink.stop()
        box.close()
    point = site.registry.sync_point("t-honest", "boot-9")
    assert point is not None
    assert (point.wall_ns, point.boot_ns) == (1_736_926_260 * S, 60 * S)
    assert site.intake.stats["unsigned_clock"] == 0


# ------------------------------------------------------------------------------ finding 12


def test_chain_breaks_and_lasting_gaps_raise_security_alerts(site: Site) -> None:
    clock = FakeClock()
    site.restart_intake(clock=clock, gap_grace_s=60.0)
    evil, events = site.evil, p.topic("t-evil", p.Channel.EVENTS)
    first = [evil.event("in", "nfc-a:04A1", time.time_ns()) for _ in range(2)]
    evil.prev = bytes(32)  # seq 3 names a predecessor that is not seq 2
    broken = evil.event("out", "nfc-a:04A1", time.time_ns())
    skipped = [evil.event("in", "nfc-a:04A1", time.time_ns()) for _ in range(2)]  # 4, 5
    after_gap = evil.event("out", "nfc-a:04A1", time.time_ns())  # 6
    late = [evil.event("in", "nfc-a:04A1", time.time_ns()) for _ in range(3)]  # 7, 8, 9
    for batch in ([*first, broken], [after_gap], [late[0]], [late[2]], [late[1]]):
        site.evil_link.send(events, [p.encode_batch(batch)])
    assert wait_until(lambda: site.evil_link.stored >= {1, 2, 3, 6, 7, 8, 9})

    # Evidence kept: the broken link is stored and acked, with an alert.
    assert [s for s, _, _ in site.inbox.rows("t-evil")] == [1, 2, 3, 6, 7, 8, 9]
    assert site.inbox.alerts("chain_break") == [("t-evil", 3, "chain_break")]
    assert site.intake.stats["chain_breaks"] == 1
    # Gaps are alerts once they last: 4..5 never came; 8, late by a message, is no gap.
    assert site.inbox.alerts("seq_gap") == []
    clock.now += 61
    assert wait_until(lambda: site.inbox.alerts("seq_gap") != [])
    assert site.inbox.alerts("seq_gap") == [("t-evil", 4, "seq_gap")]
    assert skipped[0].event.seq == 4

    # A restart neither forgets a gap nor alerts it twice.
    site.restart_intake(clock=clock, gap_grace_s=0.0)
    clock.now += 2
    assert wait_until(lambda: site.intake.pending_gaps == 0)
    assert len(site.inbox.alerts("seq_gap")) == 1


def test_an_out_of_order_link_that_does_not_match_is_a_chain_break(site: Site) -> None:
    evil, events = site.evil, p.topic("t-evil", p.Channel.EVENTS)
    one, two = (evil.event("in", "nfc-a:04A1", time.time_ns()) for _ in range(2))
    forged_one = p.sign_event(replace(one.event, event_id="another"), evil.signer)
    site.evil_link.send(events, [p.encode_batch([two])])
    site.evil_link.send(events, [p.encode_batch([forged_one])])
    assert wait_until(lambda: site.evil_link.stored >= {1, 2})
    assert site.inbox.alerts("chain_break") == [("t-evil", 1, "chain_break")]
