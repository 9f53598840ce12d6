"""Capture: the kind is inferred per badge, odd things are flagged, nothing is refused for state."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from siteclock.hw.base import BadgeRead
from siteclock.keys import Ed25519Signer
from siteclock.protocol import ClockState, DayEntry, Flag, Kind, Outcome, Roster, RosterEntry
from siteclock.terminal.capture import BreakWindow, Capture
from siteclock.terminal.direction import Direction, LastTap, decide
from siteclock.terminal.outbox import Outbox, OutboxFull

SYNCED = ClockState(synced=True, maxerror_us=20_000, source="adjtimex")
UNSYNCED = ClockState(synced=False, maxerror_us=16_000_000, source="adjtimex")
ANA, BOB, EVE = "sim:0A", "sim:0B", "sim:0E"
ROSTER = Roster(
    "t-0001", 3,
    (RosterEntry(ANA, "w-1", "Ana P."), RosterEntry(EVE, "w-3", "Eve X.", blocked=True)),
)  # fmt: skip


class Recorder:
    """Stands in for terminal.feedback.Feedback: records which pattern was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def saved(self, name, verdict, *, seq=None, badge=None, kind=None):
        self.calls.append(("saved", name, verdict, seq))

    def unknown_badge(self, *, seq=None, badge=None, kind=None):
        self.calls.append(("unknown_badge", seq))

    def blocked(self, name=None, *, seq=None, badge=None, kind=None):
        self.calls.append(("blocked", name, seq))

    def repeat(self, *, badge=None):
        self.calls.append(("repeat",))

    def refused(self, reason, *, badge=None):
        self.calls.append(("refused", reason))


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", signer=Ed25519Signer.generate(), terminal_id="t-0001",
                 workplace="ABCDEFGH12345")  # fmt: skip
    yield box
    box.close()


@pytest.fixture
def pins() -> MockFactory:
    return MockFactory()


def read(badge: str, repeat: bool = False) -> BadgeRead:
    return BadgeRead(badge, time.monotonic_ns(), repeat)


def make(outbox, pins=None, clock=SYNCED, roster=ROSTER):
    fb = Recorder()
    key = Button(5, pin_factory=pins) if pins is not None else None
    cap = Capture(outbox, feedback=fb, break_key=key, clock=lambda: clock)
    if roster is not None:
        cap.apply_roster(roster)
    return cap, fb, key


def test_in_out_alternate_per_badge(outbox) -> None:
    cap, fb, _ = make(outbox)
    kinds = [cap.tap(read(b)).signed.event.kind for b in (ANA, ANA, ANA)]
    assert kinds == [Kind.IN, Kind.OUT, Kind.IN]
    assert fb.calls[0] == ("saved", "Ana P.", None, 1)
    assert all(not e.event.flags for e in outbox.events())


def test_break_key_starts_and_ends_a_break(outbox, pins) -> None:
    cap, _, key = make(outbox, pins)
    assert cap.tap(read(ANA)).signed.event.kind is Kind.IN
    pins.pin(5).drive_low()  # pressed (pull-up)
    assert key.is_pressed
    assert cap.tap(read(ANA)).signed.event.kind is Kind.BREAK_START
    pins.pin(5).drive_high()
    assert cap.tap(read(ANA)).signed.event.kind is Kind.BREAK_END
    assert cap.tap(read(ANA)).signed.event.kind is Kind.OUT


def test_break_key_while_out_is_recorded_and_flagged_odd(outbox, pins) -> None:
    cap, _fb, _ = make(outbox, pins)
    pins.pin(5).drive_low()
    result = cap.tap(read(ANA))
    assert result.pattern == "saved"
    assert result.signed.event.kind is Kind.BREAK_START
    assert Flag.ODD_SEQUENCE in result.signed.event.flags


def test_unknown_and_blocked_badges_are_recorded_and_answered_distinctly(outbox) -> None:
    cap, fb, _ = make(outbox)
    unknown, blocked = cap.tap(read(BOB)), cap.tap(read(EVE))
    assert unknown.pattern == "unknown_badge"
    assert unknown.signed.event.flags == (Flag.UNKNOWN_BADGE,)
    assert blocked.pattern == "blocked"
    assert blocked.signed.event.flags == (Flag.BLOCKED_BADGE,)
    assert fb.calls == [("unknown_badge", 1), ("blocked", "Eve X.", 2)]


def test_no_roster_yet_means_unknown(outbox) -> None:
    cap, _, _ = make(outbox, roster=None)
    assert cap.tap(read(ANA)).pattern == "unknown_badge"


def test_roster_swap_is_whole_and_older_versions_are_ignored(outbox) -> None:
    cap, _, _ = make(outbox)
    assert cap.apply_roster(Roster("t-0001", 4, (RosterEntry(BOB, "w-2", "Bob"),)))
    assert cap.tap(read(ANA)).pattern == "unknown_badge"  # Ana is gone with the old map
    assert not cap.apply_roster(ROSTER)  # version 3 < 4
    assert cap.tap(read(BOB)).name == "Bob"


def test_unsynced_clock_is_flagged(outbox) -> None:
    cap, _, _ = make(outbox, clock=UNSYNCED)
    assert Flag.CLOCK_UNSYNCED in cap.tap(read(ANA)).signed.event.flags


def test_repeat_records_nothing(outbox) -> None:
    cap, fb, _ = make(outbox)
    cap.tap(read(ANA))
    assert cap.tap(read(ANA, repeat=True)).pattern == "repeat"
    assert outbox.stats().last_seq == 1
    assert fb.calls[-1] == ("repeat",)


def test_verdict_is_shown_on_the_next_tap(outbox) -> None:
    cap, _fb, _ = make(outbox)
    first = cap.tap(read(ANA))
    outbox.record_verdict(first.signed.event.seq, Outcome.REJECTED, "dimona not ok")
    second = cap.tap(read(ANA))
    assert second.verdict.outcome is Outcome.REJECTED
    assert cap.tap(read(ANA)).verdict is None


def test_state_is_restored_after_restart(outbox, tmp_path) -> None:
    cap, _, _ = make(outbox)
    cap.tap(read(ANA))
    again, _, _ = make(outbox)
    assert again.tap(read(ANA)).signed.event.kind is Kind.OUT


def test_disk_full_refuses_visibly_and_recovers(outbox) -> None:
    alerts: list[bool] = []
    cap, fb, _ = make(outbox)
    cap._on_disk_full = alerts.append
    cap.tap(read(ANA))
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")
    results = [cap.tap(read(f"sim:{i:040X}")) for i in range(60)]
    refused = [r for r in results if r.pattern == "refused"]
    assert refused
    assert refused[0].detail == "disk full"
    assert fb.calls[-1] == ("refused", "disk full")
    assert alerts[-1] is True
    outbox._db.execute(f"PRAGMA max_page_count = {pages * 100}")
    assert cap.tap(read(BOB)).pattern == "unknown_badge"
    assert alerts[-1] is False
    assert isinstance(OutboxFull(28, "x"), OSError)


def test_bad_badge_from_a_reader_is_refused_and_counted(outbox) -> None:
    cap, _fb, _ = make(outbox)
    assert cap.tap(read("garbage")).pattern == "refused"
    assert cap.counters["refused"] == 1
    assert outbox.stats().last_seq == 0


def next_kind(last: Kind | None, held: bool) -> tuple[Kind, bool]:
    """The inferred kind after ``last`` (a moment earlier) and whether it is odd."""
    decision = decide(LastTap(last, 0) if last else None, now_ns=1, break_wanted=held)
    return decision.kind, Flag.ODD_SEQUENCE in decision.flags


@pytest.mark.parametrize(
    ("last", "held", "expected"),
    [
        (None, False, (Kind.IN, False)),
        (Kind.OUT, False, (Kind.IN, False)),
        (Kind.IN, False, (Kind.OUT, False)),
        (Kind.BREAK_END, False, (Kind.OUT, False)),
        (Kind.BREAK_START, False, (Kind.BREAK_END, False)),
        (None, True, (Kind.BREAK_START, True)),
        (Kind.OUT, True, (Kind.BREAK_START, True)),
        (Kind.IN, True, (Kind.BREAK_START, False)),
        (Kind.BREAK_END, True, (Kind.BREAK_START, False)),
        (Kind.BREAK_START, True, (Kind.BREAK_END, False)),
    ],
)
def test_next_kind_table(last, held, expected) -> None:
    assert next_kind(last, held) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([ANA, BOB]), st.booleans()), max_size=30))
def test_any_tap_sequence_keeps_each_badge_consistent(taps) -> None:
    """Model check: a break never ends before it starts, and odd is flagged exactly when the
    break key is held by someone not at work."""
    state: dict[str, Kind | None] = {}
    for badge, held in taps:
        last = state.get(badge)
        kind, odd = next_kind(last, held)
        assert odd == (held and last in (None, Kind.OUT))
        if kind is Kind.BREAK_END:
            assert last is Kind.BREAK_START
        if last is Kind.BREAK_START:
            assert kind is Kind.BREAK_END
        state[badge] = kind


def test_storage_error_is_refused_not_swallowed(outbox) -> None:
    cap, fb, _ = make(outbox)
    outbox.close()  # any I/O failure of the outbox: nothing can be committed
    result = cap.tap(read(ANA))
    assert (result.pattern, result.detail) == ("refused", "storage error")
    assert fb.calls == [("refused", "storage error")]


# --------------------------------------------------------------------------- break windows


def test_break_window_parsing_says_what_is_wrong() -> None:
    window = BreakWindow.parse("12:00-13:30")
    assert dt.time(12, 0) in window
    assert dt.time(13, 30) not in window
    for bad in ("12:00", "noon-13:00", "13:00-12:00"):
        with pytest.raises(ValueError, match=repr(bad)):
            BreakWindow.parse(bad)


def test_a_tap_inside_a_break_window_starts_and_ends_a_break(tmp_path) -> None:
    now = [dt.time(8, 0)]
    signer = Ed25519Signer.generate()
    box = Outbox(tmp_path / "o.db", signer=signer, terminal_id="t-win", workplace="ABCDEFGH12345")
    capture = Capture(
        box, clock=lambda: ClockState(True, 1000, "test"),
        break_windows=[BreakWindow.parse("12:00-13:00")], local_time=lambda: now[0],
    )  # fmt: skip

    def tap_at(hour: int, minute: int) -> str:
        now[0] = dt.time(hour, minute)
        result = capture.tap(BadgeRead("nfc-a:0A0B0C0D", time.monotonic_ns()))
        assert result.signed is not None
        assert Flag.ODD_SEQUENCE not in result.signed.event.flags
        return str(result.signed.event.kind)

    assert [tap_at(8, 0), tap_at(12, 5), tap_at(12, 50), tap_at(16, 0)] == [
        "in", "break_start", "break_end", "out",
    ]  # fmt: skip
    # someone who is not working and taps in the window simply starts work
    assert tap_at(12, 30) == "in"
    box.close()


# --------------------------------------------------------------------------- direction (issue 8)

H = 3600 * 10**9
MORNING = 1_780_000_000 * 10**9  # any fixed moment: the taps' wall clock is injected


def at_clock(outbox, moment: list[int], **options) -> Capture:
    cap = Capture(outbox, clock=lambda: SYNCED, wall_ns=lambda: moment[0], **options)
    cap.apply_roster(ROSTER)
    return cap


def test_a_selftest_tap_never_becomes_the_workers_in(outbox) -> None:
    # what provisioning.terminal.selftest records with the worker's real badge, before the
    # service runs
    outbox.append(kind=Kind.IN, badge=ANA, clock=SYNCED, flags=[Flag.SELFTEST])
    cap, _, _ = make(outbox)
    assert cap.tap(read(ANA)).signed.event.kind is Kind.IN


def test_an_enrolment_tap_of_a_new_badge_does_not_move_the_workers_state(outbox) -> None:
    cap, _, _ = make(outbox)
    enrolment = cap.tap(read(BOB))  # Bob's new badge, not in the roster yet: linked by this tap
    assert enrolment.pattern == "unknown_badge"
    assert cap.apply_roster(Roster("t-0001", 4, (RosterEntry(BOB, "w-2", "Bob"),)))
    first = cap.tap(read(BOB))
    assert (first.name, first.signed.event.kind) == ("Bob", Kind.IN)


def test_a_rebind_starts_every_worker_clean(tmp_path) -> None:
    signer = Ed25519Signer.generate()
    old = Outbox(tmp_path / "o.db", signer=signer, terminal_id="t-0001", workplace="ABCDEFGH12345")
    make(old)[0].tap(read(ANA))  # in, on the old site
    old.close()
    new = Outbox(tmp_path / "o.db", signer=signer, terminal_id="t-0001", workplace="ZZZZZZZZ12345")
    assert make(new)[0].tap(read(ANA)).signed.event.kind is Kind.IN
    new.close()


def test_the_site_view_in_the_roster_carries_other_terminals_taps(outbox) -> None:
    moment = [MORNING]
    cap = at_clock(outbox, moment)
    # Ana tapped in at the lobby at 07:00; this is the roof terminal at noon
    cap.apply_roster(Roster("t-0001", 4, ROSTER.entries, (DayEntry("w-1", Kind.IN, MORNING),)))
    moment[0] = MORNING + 5 * H
    assert cap.tap(read(ANA)).signed.event.kind is Kind.OUT
    # and back at the lobby she taps in again: the lobby learns the roof's `out` the same way
    lobby_box = Outbox(outbox.path.with_name("lobby.db"), signer=Ed25519Signer.generate(),
                       terminal_id="t-0002", workplace="ABCDEFGH12345")  # fmt: skip
    lobby = at_clock(lobby_box, moment)
    moment[0] = MORNING
    assert lobby.tap(read(ANA)).signed.event.kind is Kind.IN
    roof_out = DayEntry("w-1", Kind.OUT, MORNING + 5 * H)
    lobby.apply_roster(Roster("t-0002", 5, ROSTER.entries, (roof_out,)))
    moment[0] = MORNING + 6 * H
    assert lobby.tap(read(ANA)).signed.event.kind is Kind.IN
    lobby_box.close()


def test_yesterdays_forgotten_out_starts_today_with_in_and_is_flagged(outbox) -> None:
    moment = [MORNING]
    cap = at_clock(outbox, moment)
    assert cap.tap(read(ANA)).signed.event.kind is Kind.IN
    moment[0] = MORNING + 24 * H
    today = cap.tap(read(ANA)).signed.event
    assert today.kind is Kind.IN
    assert Flag.MISSING_OUT in today.flags


def test_offline_taps_are_flagged_as_guesses(outbox) -> None:
    online = [True]
    cap = at_clock(outbox, [MORNING], site_view=lambda: online[0])
    assert Flag.DIRECTION_GUESS not in cap.tap(read(ANA)).signed.event.flags
    online[0] = False
    assert Flag.DIRECTION_GUESS in cap.tap(read(ANA)).signed.event.flags


def test_an_exit_reader_always_records_out(outbox) -> None:
    cap = at_clock(outbox, [MORNING], direction=Direction.OUT)
    taps = [cap.tap(read(ANA)).signed.event for _ in range(2)]
    assert [t.kind for t in taps] == [Kind.OUT, Kind.OUT]
    assert all(Flag.FIXED_DIRECTION in t.flags for t in taps)
    assert Flag.ODD_SEQUENCE in taps[0].flags  # an `out` with no `in`: for the employer


def test_feedback_is_told_the_direction(outbox) -> None:
    seen = []

    class Journal(Recorder):
        def saved(self, name, verdict, *, seq=None, badge=None, kind=None):
            seen.append(kind)

    cap = Capture(outbox, feedback=Journal(), clock=lambda: SYNCED)
    cap.apply_roster(ROSTER)
    cap.tap(read(ANA))
    cap.tap(read(ANA))
    assert seen == [Kind.IN, Kind.OUT]
