"""DESIGN decision 4: the gateway dates taps taken before the terminal's clock was synced.

A terminal flags such a tap ``clock_unsynced`` and keeps its boot id and boot-time clock. When
a later heartbeat of the same boot carries a synced clock with a clock proof signed by the
terminal, the intake keeps it as a sync point (an unsigned one is recorded but corrects nothing)
and the relay submits ``sync.wall_ns - (sync.boot_ns - event.boot_ns)`` to CIaO. Without one,
the relay holds the event for ``unsynced_hold_s``, then sends the terminal's own time with a
note for the employer.

Real parts throughout: the gateway's SQLite file, the terminal registry, the intake, the relay
and the CIaO simulator over HTTP, with genuinely signed events.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteclock import protocol as p
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.config import MqttConfig
from siteclock.gateway.db.schema import ADDED_COLUMNS, RELAY
from siteclock.gateway.intake import Intake
from siteclock.gateway.relay import NEVER_SYNCED, WAITING_FOR_SYNC, registration_date
from siteclock.gateway.relay_store import RelayStore
from siteclock.gateway.store import Inbox
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from tests.support.ciao import WORKPLACE, World, make_world, running_sim
from tests.support.inbox import TerminalFeed, insert

S = 10**9
TRUE_START = 1_736_926_200 * S  # 2025-01-15T07:30:00Z: when the terminal really booted
RTC_START = 1_735_689_540 * S  # 2024-12-31T23:59:00Z: what its unsynced clock said then


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=11) as server:
        yield server


def tap(
    feed: TerminalFeed, badge: str, *, boot_id: str, boot_ns: int, synced: bool, kind: str = "in"
) -> p.SignedEvent:
    """A signed tap on ``feed``'s chain, ``boot_ns`` after boot, with a true or a wrong clock."""
    return feed.event(
        kind, badge, (TRUE_START if synced else RTC_START) + boot_ns,
        boot_id=boot_id, boot_ns=boot_ns,
        clock=p.ClockState(synced, 1000 if synced else -1, "test"),
        flags=() if synced else (p.Flag.CLOCK_UNSYNCED,),
    )  # fmt: skip


def heartbeat(*, boot_id: str, boot_ns: int, synced: bool, wall_ns: int) -> dict[str, Any]:
    """A status payload as ``terminal/health.py`` publishes it (the fields this feature reads)."""
    return {
        "state": "online",
        "clock": p.ClockState(synced, 2000 if synced else -1, "test").to_map(),
        "boot_id": boot_id,
        "boot_ns": boot_ns,
        "wall_ns": wall_ns,
        "queue_depth": 0,
    }


def proof(terminal_id: str, *, boot_id: str, boot_ns: int, wall_ns: int) -> p.ClockProof:
    """A synced reading as the intake hands it over once its signature checked."""
    return p.ClockProof(terminal_id, boot_id, boot_ns, wall_ns, 2000)


class Clock:
    """The relay's clock: real time plus a shift the test moves forward."""

    def __init__(self) -> None:
        self.shift_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.shift_ns


def world_with_clock(tmp_path: Path, sim: SimServer, **options: object) -> tuple[World, Clock]:
    world = make_world(tmp_path, sim, workers=2, **options)
    clock = Clock()
    world.relay.clock_ns = clock  # type: ignore[attr-defined]
    return world, clock


def registry_for(world: World, feed: TerminalFeed) -> TerminalRegistry:
    registry = TerminalRegistry(world.db)  # the same gateway file, as in production
    registry.register(feed.terminal_id, WORKPLACE, public_key=feed.signer.public_key_bytes())
    return registry


def synced_heartbeat(registry: TerminalRegistry, feed: TerminalFeed, *, boot_s: int) -> None:
    """NTP synced ``boot_s`` after boot A; the terminal says so, signed, in its heartbeat."""
    beat = dict(boot_id="boot-A", boot_ns=boot_s * S, wall_ns=TRUE_START + boot_s * S)
    registry.record_heartbeat(
        feed.terminal_id,
        heartbeat(synced=True, **beat),  # type: ignore[arg-type]
        proof=proof(feed.terminal_id, **beat),  # type: ignore[arg-type]
    )


def test_unsynced_tap_is_dated_from_a_later_sync_of_its_boot(
    tmp_path: Path, sim: SimServer
) -> None:
    world, clock = world_with_clock(tmp_path, sim, unsynced_hold_s=600.0, unsynced_recheck_s=1.0)
    feed = TerminalFeed("t-clock-01", WORKPLACE)
    registry = registry_for(world, feed)
    early = tap(feed, world.people[0].badge, boot_id="boot-A", boot_ns=5 * S, synced=False)
    on_time = tap(feed, world.people[1].badge, boot_id="boot-A", boot_ns=90 * S, synced=True)
    insert(world.db, [early, on_time])

    for _ in range(5):  # the unsynced tap waits for a sync, and the terminal's tap after it
        world.relay.run_once()  # type: ignore[attr-defined]
    held = world.relay.store.get(feed.terminal_id, 1)  # type: ignore[attr-defined]
    assert held["state"] == "awaiting_clock_sync"
    assert held["last_error"] == WAITING_FOR_SYNC
    after = world.relay.store.get(feed.terminal_id, 2)  # type: ignore[attr-defined]
    assert after["state"] == "awaiting_earlier"  # gateway.relay_gaps: its time decides order
    assert sim.registrations() == []

    # NTP synced at 60 s after boot; the terminal says so in its next heartbeat.
    synced_heartbeat(registry, feed, boot_s=60)
    clock.shift_ns = 2 * S  # past the recheck
    world.run_until_final()

    dates = {r["ssin"]: r["registrationDate"] for r in sim.registrations()}
    assert dates[world.people[0].inss] == registration_date(TRUE_START + 5 * S)
    assert dates[world.people[1].inss] == registration_date(TRUE_START + 90 * S)
    row = world.relay.store.get(feed.terminal_id, 1)  # type: ignore[attr-defined]
    assert row["terminal_wall_ns"] == RTC_START + 5 * S
    assert row["corrected_wall_ns"] == TRUE_START + 5 * S
    shift_s = (TRUE_START - RTC_START) / S
    assert row["clock_note"] == f"corrected by +{shift_s:.3f} s from a clock sync in the same boot"
    untouched = world.relay.store.get(feed.terminal_id, 2)  # type: ignore[attr-defined]
    assert untouched["reg_date"] == registration_date(TRUE_START + 90 * S)
    assert (untouched["terminal_wall_ns"], untouched["clock_note"]) == (None, None)
    assert world.relay.counters["clock_corrected"] == 1  # type: ignore[attr-defined]


def test_a_worker_tap_after_an_undated_one_waits_so_the_day_keeps_its_order(
    tmp_path: Path, sim: SimServer
) -> None:
    """In at 07:30 (synced); the clock jumps back two weeks; out an hour later (unsynced, stamped
    two weeks ago); NTP; in again (synced). Decided before the out is dated, the second in
    would follow the first in and be "corrected" to out; it waits for the out instead."""
    world, clock = world_with_clock(tmp_path, sim, unsynced_hold_s=600.0, unsynced_recheck_s=1.0)
    feed = TerminalFeed("t-clock-05", WORKPLACE)
    registry = registry_for(world, feed)
    ana = world.people[0].badge
    taps = [
        tap(feed, ana, boot_id="boot-A", boot_ns=10 * S, synced=True, kind="in"),
        tap(feed, ana, boot_id="boot-A", boot_ns=3600 * S, synced=False, kind="out"),
        tap(feed, ana, boot_id="boot-A", boot_ns=7200 * S, synced=True, kind="in"),
    ]
    insert(world.db, taps)
    for _ in range(5):
        world.relay.run_once()  # type: ignore[attr-defined]
    states = [world.relay.store.get(feed.terminal_id, n)["state"] for n in (1, 2, 3)]  # type: ignore[attr-defined]
    assert states[0] in ("pending", "registered")  # sent
    assert states[1:] == ["awaiting_clock_sync", "awaiting_earlier"]

    synced_heartbeat(registry, feed, boot_s=5000)
    clock.shift_ns = 2 * S  # past the recheck
    world.run_until_final()

    sent = sorted((r["registrationDate"], r["type"]) for r in sim.registrations())
    assert sent == [(registration_date(TRUE_START + n * S), kind)
                    for n, kind in ((10, "in"), (3600, "out"), (7200, "in"))]  # fmt: skip
    assert world.relay.counters["sequence.direction_corrected"] == 0  # type: ignore[attr-defined]


def test_without_a_sync_of_its_boot_the_tap_is_held_then_sent_with_terminal_time(
    tmp_path: Path, sim: SimServer
) -> None:
    world, clock = world_with_clock(tmp_path, sim, unsynced_hold_s=30.0, unsynced_recheck_s=5.0)
    feed = TerminalFeed("t-clock-02", WORKPLACE)
    registry = registry_for(world, feed)
    insert(world.db, [tap(feed, world.people[0].badge, boot_id="boot-A", boot_ns=5 * S,
                          synced=False)])  # fmt: skip
    # A synced point of another boot, and an unsynced one of this boot: neither may be used.
    beat = dict(boot_id="boot-B", boot_ns=60 * S, wall_ns=TRUE_START + 60 * S)
    registry.record_heartbeat(
        feed.terminal_id,
        heartbeat(synced=True, **beat),  # type: ignore[arg-type]
        proof=proof(feed.terminal_id, **beat),  # type: ignore[arg-type]
    )
    registry.record_heartbeat(
        feed.terminal_id,
        heartbeat(boot_id="boot-A", boot_ns=60 * S, synced=False, wall_ns=RTC_START + 60 * S),
    )

    for shift_s in (0, 6, 12, 29):  # rechecked while the hold lasts, never sent
        clock.shift_ns = shift_s * S
        world.relay.run_once()  # type: ignore[attr-defined]
        row = world.relay.store.get(feed.terminal_id, 1)  # type: ignore[attr-defined]
        assert (row["state"], row["last_error"], row["attempts"]) == (
            "awaiting_clock_sync",
            WAITING_FOR_SYNC,
            0,
        )
    assert sim.registrations() == []

    clock.shift_ns = 31 * S  # the hold is over
    world.run_until_final()

    [record] = sim.registrations()
    assert record["registrationDate"] == registration_date(RTC_START + 5 * S)
    row = world.relay.store.get(feed.terminal_id, 1)  # type: ignore[attr-defined]
    assert row["state"] == "registered"
    assert row["clock_note"] == NEVER_SYNCED
    assert (row["terminal_wall_ns"], row["corrected_wall_ns"]) == (RTC_START + 5 * S, None)
    assert world.relay.counters["clock_never_synced"] == 1  # type: ignore[attr-defined]


def test_intake_keeps_synced_heartbeats_as_sync_points_and_ignores_unsynced(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gateway.db"
    signer = Ed25519Signer.generate()
    registry = TerminalRegistry(db)
    registry.register("t-clock-03", WORKPLACE, public_key=signer.public_key_bytes())
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected
    status = p.topic("t-clock-03", p.Channel.STATUS)

    def send(**fields: Any) -> None:
        signed = p.attach_clock_proof(heartbeat(**fields), "t-clock-03", signer)
        intake.handle(status, p.encode_status(signed))

    send(boot_id="boot-A", boot_ns=10 * S, synced=False, wall_ns=RTC_START + 10 * S)
    assert registry.sync_point("t-clock-03", "boot-A") is None
    assert registry.last_heartbeat("t-clock-03")["boot_ns"] == 10 * S  # still recorded

    send(boot_id="boot-A", boot_ns=60 * S, synced=True, wall_ns=TRUE_START + 60 * S)
    send(boot_id="boot-A", boot_ns=30 * S, synced=True, wall_ns=TRUE_START + 30 * S)  # late
    send(boot_id="boot-A", boot_ns=90 * S, synced=False, wall_ns=RTC_START + 90 * S)
    point = registry.sync_point("t-clock-03", "boot-A")
    assert point is not None
    assert (point.wall_ns, point.boot_ns, point.maxerror_us) == (TRUE_START + 60 * S, 60 * S, 2000)
    assert registry.sync_point("t-clock-03", "boot-B") is None
    assert intake.stats["heartbeats"] == 4
    assert intake.stats["unsigned_clock"] == 0


def test_unsigned_or_forged_clock_readings_set_no_sync_point(tmp_path: Path) -> None:
    """Finding 14: a heartbeat is unsigned JSON that anyone with the terminal's broker password
    can publish; before clock proofs, its wall_ns moved the boot's unsynced taps in time."""
    db = tmp_path / "gateway.db"
    signer, mallory = Ed25519Signer.generate(), Ed25519Signer.generate()
    registry = TerminalRegistry(db)
    registry.register("t-clock-04", WORKPLACE, public_key=signer.public_key_bytes())
    registry.register("t-clock-05", WORKPLACE, public_key=mallory.public_key_bytes())
    intake = Intake(MqttConfig(), inbox=Inbox(db), registry=registry)  # never connected
    status = p.topic("t-clock-04", p.Channel.STATUS)
    beat = heartbeat(boot_id="boot-A", boot_ns=60 * S, synced=True, wall_ns=TRUE_START)

    intake.handle(status, p.encode_status(beat))  # an old terminal, or a forger: no proof
    intake.handle(status, p.encode_status(p.attach_clock_proof(beat, "t-clock-04", mallory)))
    # A proof genuinely signed by another terminal, replayed here
    intake.handle(status, p.encode_status(p.attach_clock_proof(beat, "t-clock-05", mallory)))
    tampered = p.attach_clock_proof(beat, "t-clock-04", signer)
    tampered[p.CLOCK_PROOF_FIELD] = tampered[p.CLOCK_PROOF_FIELD][:-8] + "AAAAAAA="
    intake.handle(status, p.encode_status(tampered))

    assert registry.sync_point("t-clock-04", "boot-A") is None
    assert registry.last_heartbeat("t-clock-04")["wall_ns"] == TRUE_START  # still shown
    assert intake.stats["heartbeats"] == 4
    assert intake.stats["unsigned_clock"] == 4
    assert intake.counters["bad_clock_proof"] == 3

    intake.handle(status, p.encode_status(p.attach_clock_proof(beat, "t-clock-04", signer)))
    point = registry.sync_point("t-clock-04", "boot-A")
    assert point is not None
    assert point.wall_ns == TRUE_START


def test_an_older_relay_database_gets_the_clock_columns(tmp_path: Path) -> None:
    db_path = tmp_path / "gateway.db"
    old = sqlite3.connect(db_path)
    old.executescript(RELAY)  # the table as released before the clock columns
    added = set(ADDED_COLUMNS["registrations"])
    assert not added & {r[1] for r in old.execute("PRAGMA table_info(registrations)")}
    old.execute(
        "INSERT INTO registrations(terminal, seq, state, created_ns, updated_ns) "
        "VALUES ('t-old', 1, 'registered', 1, 1)"
    )
    old.commit()
    old.close()

    for _ in range(2):  # opening twice must not add the columns twice
        store = RelayStore(db_path)
        row = store.get("t-old", 1)
        store.close()
    assert row is not None
    assert row["state"] == "registered"
    assert (row["terminal_wall_ns"], row["corrected_wall_ns"], row["clock_note"]) == (
        None,
        None,
        None,
    )


def test_held_taps_are_said_loudly_while_they_wait(
    tmp_path: Path, sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, Seen 6: taps held for a clock sync used to wait ten minutes in silence; the
    gateway now says which terminal, why and for how long, again every minute, then when
    they go."""
    world, clock = world_with_clock(tmp_path, sim, unsynced_hold_s=600.0, unsynced_recheck_s=1.0)
    feed = TerminalFeed("t-clock-03", WORKPLACE)
    registry_for(world, feed)
    insert(
        world.db, [tap(feed, world.people[0].badge, boot_id="boot-C", boot_ns=5 * S, synced=False)]
    )
    relay = world.relay  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="siteclock.waits"):
        for _ in range(130):  # 130 s of relay turns, each recheck (1 s) looks at the tap again
            relay.run_once()
            clock.shift_ns += S
        held = [
            r for r in caplog.records if r.getMessage() == "gateway holding taps for a clock sync"
        ]
        assert len(held) == 3  # at 0, 60 and 120 s: repeated, rate-limited
        assert "t-clock-03" in held[0].fields["cause"]  # type: ignore[attr-defined]
        assert "600 s" in held[0].fields["cause"]  # type: ignore[attr-defined]
        waited = [r.fields["waited_s"] for r in held]  # type: ignore[attr-defined]
        assert waited[1:] == pytest.approx([60.0, 120.0], abs=5.0)  # real time adds a little
        (waiting,) = relay.clock_holds.waiting()
        assert waiting.startswith("t-clock-03: taps held for a clock sync for 1")
        clock.shift_ns += 600 * S  # the hold ends: the tap goes with the terminal's own time
        world.run_until_final()
    assert "gateway holding taps for a clock sync: over" in caplog.text
    assert relay.clock_holds.waiting() == []
