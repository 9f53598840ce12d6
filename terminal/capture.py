"""Turn a badge read into a recorded event: decide the kind, flag what looks odd, never refuse.

The worker does not choose ``in`` or ``out``: :mod:`terminal.direction` decides it from the
worker's last attendance tap on this workplace, whichever is newer of this terminal's own taps
(kept in the outbox, so it survives restarts and pruning, per workplace so a rebind starts
clean) and the site's view the gateway sends with the roster (taps at the site's other
terminals). A break key, when the site has one, asks for a break; ``capture.direction`` can fix
the terminal to ``in`` or ``out`` (entry and exit readers). The law wants every tap registered
in real time, so a tap is never refused for a *state* reason: what looks wrong is recorded with
a :class:`Flag` for the employer to review (docs/direction.md has the whole table). A tap made
while the terminal is offline is flagged ``direction_guess``; one a shift after the worker's
last ``in`` starts with ``in`` and is flagged ``missing_out``.

A site without break keys may configure **break windows** instead (``capture.break_windows``,
e.g. ``["12:00-13:00"]``, local time): a worker who is working and taps inside a window starts a
break, and their next tap ends it. The worker's tap is the same either way; the gateway maps a
break start to CIaO ``out`` and its end to ``in``, exactly as the law describes a rest break.

A badge missing from the roster is recorded with ``unknown_badge`` ("saved, badge not yet
known"); a blocked one with ``blocked_badge``; an unsynchronised clock adds ``clock_unsynced``.
A repeat read (same badge within the repeat window) records nothing and answers ``repeat``.
The only refusal is physical: the outbox cannot write (disk full), and then the worker is
told so in red instead of being told a lie.

Example::

    capture = Capture(outbox, feedback=fb)
    capture.apply_roster(roster)
    result = capture.tap(BadgeRead("nfc-a:04A1B2C3", time.monotonic_ns()))
    result.pattern   # "saved"
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from siteclock.hw.base import BadgeRead
from siteclock.log import fields
from siteclock.protocol import (
    ClockState,
    Flag,
    Kind,
    MalformedMessage,
    Roster,
    RosterEntry,
    SignedEvent,
    Verdict,
)
from siteclock.shift import ShiftRule
from siteclock.terminal import clock as clock_mod
from siteclock.terminal.clock import read_clock
from siteclock.terminal.direction import Direction, WorkerStates, decide, state_key
from siteclock.terminal.outbox import Outbox, OutboxError, OutboxFull

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BreakWindow:
    """A daily span of local time in which a working worker's tap starts a break."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> BreakWindow:
        """``"12:00-13:30"`` -> BreakWindow; a clear ``ValueError`` otherwise."""
        try:
            first, last = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"{text!r} is not a window like '12:00-13:30'") from None
        if not first < last:
            raise ValueError(f"{text!r} ends before it starts")
        return cls(first, last)

    def __contains__(self, moment: dt.time) -> bool:
        return self.start <= moment < self.end


def _local_time() -> dt.time:
    return dt.datetime.now().time()


class BreakKey(Protocol):
    """Anything with ``is_pressed``: a gpiozero ``Button`` on the break key's pin."""

    @property
    def is_pressed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TapResult:
    """What one read led to. ``pattern`` names the feedback given (see terminal.feedback)."""

    pattern: str  # saved | unknown_badge | blocked | repeat | refused
    badge: str
    signed: SignedEvent | None = None
    name: str | None = None
    verdict: Verdict | None = None
    detail: str = ""

    @property
    def kind(self) -> Kind | None:
        """The direction recorded (None when nothing was)."""
        return self.signed.event.kind if self.signed is not None else None


class Capture:
    """Decides, records and answers taps. Called from the reader thread only.

    :param outbox: where events are recorded (the system of record).
    :param feedback: a :class:`terminal.feedback.Feedback` (or None: results only).
    :param break_key: the break key (gpiozero ``Button``), None when the site has none.
    :param clock: returns the clock's trust now (``terminal.clock.read_clock``).
    :param break_windows: daily spans of local time in which a working worker's tap starts a
        break (sites without a break key); ``local_time`` returns the time of day (tests).
    :param on_disk_full: called with True when a tap could not be recorded for lack of space,
        and with False at the next tap that could; health turns it into an alert.
    :param direction: ``inferred`` (default), or ``in``/``out`` for a fixed entry/exit reader.
    :param shift: when a worker's last ``in`` belongs to an earlier shift.
    :param site_view: True while the terminal has the site's view (its uplink is connected);
        an inferred tap without it is flagged ``direction_guess``. None: never flagged (a
        terminal built without an uplink, as in unit tests of other things).
    :param wall_ns: the wall clock (nanoseconds); tests inject one to replay a day.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        feedback: Any = None,
        break_key: BreakKey | None = None,
        clock: Callable[[], ClockState] = read_clock,
        on_disk_full: Callable[[bool], None] | None = None,
        break_windows: Sequence[BreakWindow] = (),
        local_time: Callable[[], dt.time] = _local_time,
        direction: Direction = Direction.INFERRED,
        shift: ShiftRule = ShiftRule(),  # noqa: B008 - frozen, shared safely
        site_view: Callable[[], bool] | None = None,
        wall_ns: Callable[[], int] = clock_mod.wall_ns,
        boot_ns: Callable[[], int] = clock_mod.boot_ns,
    ) -> None:
        self._outbox = outbox
        self._direction = Direction(direction)
        self._shift = shift
        self._site_view = site_view
        self._wall_ns = wall_ns
        self._boot_ns = boot_ns
        self._steps = clock_mod.StepWatch()
        self._break_windows = tuple(break_windows)
        self._local_time = local_time
        self._feedback = feedback
        self._break_key = break_key
        self._clock = clock
        self._on_disk_full = on_disk_full
        self._lock = threading.Lock()
        self._states = WorkerStates(outbox.worker_states())
        # Replaced whole by apply_roster (one assignment, atomic for readers); None = no
        # roster received yet, so every badge is "not yet known".
        self._roster: dict[str, RosterEntry] | None = None
        self.roster_version: int | None = None
        self.counters: Counter[str] = Counter()

    def apply_roster(self, roster: Roster) -> bool:
        """Swap in a new roster (from the uplink thread). Older versions are ignored."""
        if self.roster_version is not None and roster.version < self.roster_version:
            log.info("older roster ignored",
                     extra=fields(version=roster.version, current=self.roster_version))  # fmt: skip
            return False
        self._roster = {entry.badge: entry for entry in roster.entries}
        with self._lock:  # not while a tap is being decided
            self._states.apply_site(roster.day)
        self.roster_version = roster.version
        log.info("roster applied", extra=fields(version=roster.version, badges=len(self._roster)))
        return True

    def last_kind(self, badge: str) -> Kind | None:
        """The kind of the last attendance tap known for this badge's worker on the site."""
        roster = self._roster
        entry = roster.get(badge) if roster is not None else None
        last = self._states.last(state_key(entry.worker if entry else None, badge))
        return last.kind if last is not None else None

    def tap(self, read: BadgeRead) -> TapResult:
        """Record one read (unless it is a repeat) and give the worker the matching answer."""
        with self._lock:
            result = self._record(read)
        self.counters[result.pattern] += 1
        self._answer(result)
        return result

    def _record(self, read: BadgeRead) -> TapResult:
        badge = read.badge
        if read.repeat:
            return TapResult("repeat", badge)
        roster = self._roster  # one read of the reference: a concurrent swap cannot split it
        entry = roster.get(badge) if roster is not None else None
        flags: list[str] = []
        if entry is None:
            flags.append(Flag.UNKNOWN_BADGE)
        elif entry.blocked:
            flags.append(Flag.BLOCKED_BADGE)
        key = state_key(entry.worker if entry is not None else None, badge)
        last = self._states.last(key)
        wall, boot = self._wall_ns(), self._boot_ns()
        if self._steps.stepped(wall, boot):
            flags.append(Flag.CLOCK_STEPPED)
        held = bool(self._break_key is not None and self._break_key.is_pressed)
        if not held and self._break_windows and last is not None and last.kind in (
            Kind.IN, Kind.BREAK_END,
        ):
            now = self._local_time()
            held = any(now in window for window in self._break_windows)
        guess = self._site_view is not None and not self._site_view()
        decision = decide(last, now_ns=wall, break_wanted=held, direction=self._direction,
                          rule=self._shift, guess=guess)  # fmt: skip
        kind = decision.kind
        flags.extend(decision.flags)
        clock = self._clock()
        if not clock.synced:
            flags.append(Flag.CLOCK_UNSYNCED)
        try:
            verdict = self._outbox.last_verdict_for(badge)
            signed = self._outbox.append(
                kind=kind, badge=badge, clock=clock, flags=flags, wall_ns=wall, boot_ns=boot,
                state_key=key,
            )
        except OutboxFull as exc:
            log.error("tap refused: outbox full", extra=fields(error=exc))
            if self._on_disk_full is not None:
                self._on_disk_full(True)
            return TapResult("refused", badge, detail="disk full")
        except MalformedMessage as exc:
            log.warning("tap refused: bad badge from reader", extra=fields(error=exc))
            return TapResult("refused", badge, detail="badge not readable")
        except (OutboxError, sqlite3.Error, OSError) as exc:
            # An I/O error on the card: nothing was committed, so the worker must hear so.
            log.error("tap refused: outbox error", extra=fields(error=exc))
            return TapResult("refused", badge, detail="storage error")
        if self._on_disk_full is not None:
            self._on_disk_full(False)
        self._states.record(key, kind, wall)
        name = entry.name if entry is not None else None
        if entry is None:
            pattern = "unknown_badge"
        elif entry.blocked:
            pattern = "blocked"
        else:
            pattern = "saved"
        log.info("tap saved", extra=fields(seq=signed.event.seq, kind=kind, flags=",".join(flags)))
        return TapResult(pattern, badge, signed=signed, name=name, verdict=verdict)

    def _answer(self, result: TapResult) -> None:
        fb = self._feedback
        if fb is None:
            return
        seq = result.signed.event.seq if result.signed is not None else None
        if result.pattern == "saved":
            fb.saved(result.name, result.verdict, seq=seq, badge=result.badge, kind=result.kind)
        elif result.pattern == "unknown_badge":
            fb.unknown_badge(seq=seq, badge=result.badge, kind=result.kind)
        elif result.pattern == "blocked":
            fb.blocked(result.name, seq=seq, badge=result.badge, kind=result.kind)
        elif result.pattern == "repeat":
            fb.repeat(badge=result.badge)
        else:
            fb.refused(result.detail, badge=result.badge)
