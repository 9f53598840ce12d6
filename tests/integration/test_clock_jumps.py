"""The terminal's wall clock jumps back and forward; then NTP syncs it (DESIGN decision 4).

Time reaches the terminal through one interface (``terminal/clock.py``: wall clock, boot
clock, the kernel's sync state), which :class:`KernelClock` plays here as Linux does: a step
(``settimeofday``) moves the wall clock, not the boot clock, and drops the sync (maxerror 16 s)
until NTP confirms the time again. Real parts otherwise: capture, the SQLite outbox with its
signed chain, the gateway's database, the relay and the CIaO simulator over HTTP.

What must hold:

* every tap is recorded, in sequence, and the chain verifies: a jump changes no number;
* a tap after a jump is flagged (``clock_stepped``, and ``clock_unsynced`` while the kernel
  says so);
* the gateway dates the unsynced taps from the boot's later sync point: the NSSO gets the true
  moments, so each worker's registrations come in the order they tapped, and none lies in
  the future;
* a tap stamped in the future with no sync to correct it (a clock that ran ahead while the
  kernel still called it synced) goes to the NSSO at its arrival time, with a note.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock import protocol as p
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.relay import registration_date
from siteclock.gateway.sequence import issues_of
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.hw.base import BadgeRead
from siteclock.keys import Ed25519Signer
from siteclock.terminal import clock as clock_mod
from siteclock.terminal.capture import Capture
from siteclock.terminal.outbox import Outbox
from tests.support import inbox
from tests.support.ciao import WORKPLACE, make_world, running_sim
from tests.support.inbox import TerminalFeed, insert

pytestmark = pytest.mark.slow

S = 10**9
HOUR = 3600 * S


class KernelClock:
    """The three things the terminal reads time from, with a step as the kernel does it."""

    def __init__(self, true_offset_ns: int) -> None:
        self.boot = 10 * S
        self.true_offset = true_offset_ns
        self.offset = true_offset_ns  # wall = boot + offset
        self.synced = True

    def wall_ns(self) -> int:
        return self.boot + self.offset

    def boot_ns(self) -> int:
        return self.boot

    def read(self) -> p.ClockState:
        return p.ClockState(self.synced, 2000 if self.synced else 16_000_000, "adjtimex")

    def step(self, by_ns: int) -> None:
        """``date -s`` or a bad RTC read: the wall clock moves, the kernel drops its sync."""
        self.offset += by_ns
        self.synced = False

    def ntp_sync(self) -> None:
        """NTP steps the clock to the true time and confirms it."""
        self.offset = self.true_offset
        self.synced = True

    def true_ns(self) -> int:
        return self.boot + self.true_offset


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.05, seed=13) as server:
        yield server


def test_clock_jumps_are_flagged_keep_the_sequence_and_reach_the_nsso_corrected(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=2, unsynced_hold_s=600.0, unsynced_recheck_s=0.05)
    ana, bob = world.people
    signer = Ed25519Signer.generate()
    inbox.KEYS[signer.kid] = signer.public_key_bytes()
    kernel = KernelClock(time.time_ns() - 2 * HOUR - 10 * S)  # booted two hours ago
    box = Outbox(tmp_path / "outbox.db", signer=signer, terminal_id="t-jump",
                 workplace=WORKPLACE)  # fmt: skip
    capture = Capture(box, clock=kernel.read, wall_ns=kernel.wall_ns, boot_ns=kernel.boot_ns)
    taps: list[tuple[str, int]] = []  # (badge, true time) in the order they happened

    def tap_at(boot_s: int, badge: str) -> p.SignedEvent:
        kernel.boot = boot_s * S
        result = capture.tap(BadgeRead(badge, time.monotonic_ns()))
        assert result.signed is not None, result
        taps.append((badge, kernel.true_ns()))
        return result.signed

    first = tap_at(100, ana.badge)  # in, synced
    kernel.step(-HOUR)  # the clock jumps back an hour
    back = tap_at(200, ana.badge)  # stamped an hour before Ana's "in"
    back_b = tap_at(210, bob.badge)
    kernel.step(+4 * HOUR)  # and then three hours ahead of the truth: in the future
    ahead = tap_at(300, ana.badge)
    kernel.boot = 400 * S
    kernel.ntp_sync()  # NTP arrives: true time, synced
    sync_wall, sync_boot = kernel.wall_ns(), kernel.boot_ns()
    after = tap_at(500, bob.badge)

    events = list(box.events())
    assert [e.event.seq for e in events] == [1, 2, 3, 4, 5]
    assert box.verify({signer.kid: signer.public_key_bytes()}) == 5
    box.close()
    flags = [set(e.event.flags) for e in (first, back, back_b, ahead, after)]
    assert p.Flag.CLOCK_STEPPED not in flags[0]
    assert {p.Flag.CLOCK_STEPPED, p.Flag.CLOCK_UNSYNCED} <= flags[1]
    assert p.Flag.CLOCK_UNSYNCED in flags[2]
    assert {p.Flag.CLOCK_STEPPED, p.Flag.CLOCK_UNSYNCED} <= flags[3]
    assert p.Flag.CLOCK_STEPPED in flags[4]  # NTP's own step, with a synced clock
    assert p.Flag.CLOCK_UNSYNCED not in flags[4]
    assert back.event.wall_ns < first.event.wall_ns  # what the terminal believed
    assert ahead.event.wall_ns > time.time_ns() + HOUR // 2

    # The gateway: the events arrive; unsynced ones wait for a sync point of their boot.
    insert(world.db, events)
    terminals = TerminalRegistry(world.db)
    terminals.register("t-jump", WORKPLACE, public_key=signer.public_key_bytes())
    for _ in range(5):
        world.relay.run_once()  # type: ignore[attr-defined]
    # Only the tap before the jump goes: the unsynced ones wait for a sync point, and Bob's
    # synced tap after them waits for them (where it stands in his day depends on their time).
    assert len(sim.registrations()) == 1
    assert world.relay.store.get("t-jump", 5)["state"] == "awaiting_earlier"
    beat = {"boot_id": first.event.boot_id, "boot_ns": sync_boot, "wall_ns": sync_wall}
    terminals.record_heartbeat(
        "t-jump",
        {"state": "online", "clock": kernel.read().to_map(), "queue_depth": 0, **beat},
        proof=p.ClockProof("t-jump", first.event.boot_id, sync_boot, sync_wall, 2000),
    )
    world.run_until_final()

    records = sim.registrations()
    assert len(records) == 5
    now = registration_date(time.time_ns())
    assert all(r["registrationDate"] <= now for r in records), "a registration in the future"
    by_worker = {ana.inss: ana.badge, bob.inss: bob.badge}
    sent = sorted((r["registrationDate"], by_worker[r["ssin"]]) for r in records)
    assert sent == sorted((registration_date(t), b) for b, t in taps)
    for badge in (ana.badge, bob.badge):  # each worker's taps in the order they happened
        got = [d for d, b in sorted(sent) if b == badge]
        assert got == [registration_date(t) for b, t in taps if b == badge]
    assert world.relay.counters["clock_corrected"] == 3  # type: ignore[attr-defined]
    for worker in (ana, bob):  # and each worker's in/out alternate, as they were tapped
        types = [r["type"] for r in sorted(records, key=lambda r: r["registrationDate"])
                 if r["ssin"] == worker.inss]  # fmt: skip
        assert types == ["in", "out", "in"][: len(types)]
    assert issues_of(world.relay.store.db) == []


def test_a_tap_stamped_in_the_future_goes_at_its_arrival_time(
    tmp_path: Path, sim: SimServer
) -> None:
    world = make_world(tmp_path, sim, workers=1)
    feed = TerminalFeed("t-ahead", WORKPLACE)
    ahead = time.time_ns() + 26 * HOUR  # "synced", yet a day ahead: nothing will correct it
    insert(world.db, [feed.event(p.Kind.IN, world.people[0].badge, ahead)])
    world.run_until_final()
    (record,) = sim.registrations()
    assert record["registrationDate"] <= registration_date(time.time_ns())
    row = world.relay.store.get("t-ahead", 1)  # type: ignore[attr-defined]
    assert row["terminal_wall_ns"] == ahead
    assert row["clock_note"].endswith("after the tap reached the gateway: arrival time used")
    assert world.relay.counters["clock_in_future"] == 1  # type: ignore[attr-defined]


def test_read_clock_reads_the_kernel_again_right_after_a_step(monkeypatch) -> None:
    """The cached sync state must not outlive a step (the kernel dropped its sync then)."""
    kernel = KernelClock(time.time_ns())
    monkeypatch.setattr(clock_mod, "wall_ns", kernel.wall_ns)
    monkeypatch.setattr(clock_mod, "boot_ns", kernel.boot_ns)
    monkeypatch.setattr(clock_mod, "read_clock_uncached", kernel.read)
    monkeypatch.setattr(clock_mod, "_cached", None)
    monkeypatch.setattr(clock_mod, "_cache_steps", clock_mod.StepWatch())
    assert clock_mod.read_clock().synced
    kernel.step(-HOUR)
    assert not clock_mod.read_clock().synced  # within the cache's second: read again anyway
    kernel.boot += 3600 * S  # an hour of NTP slew (0.5 ms/s) is no step
    kernel.synced = True
    kernel.offset += int(1.5 * S)
    assert not clock_mod._cache_steps.stepped(kernel.wall_ns(), kernel.boot_ns())
