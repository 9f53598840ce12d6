"""Which way a tap goes: ``in``, ``out`` or a break, decided from the worker's day on the site.

The worker does not choose; the terminal decides from the last *attendance* tap it knows of for
that worker on this workplace, whichever is newer of

* its own taps (kept in the outbox's ``worker_state``, per workplace, so a rebind starts clean;
  a self-test never writes there), and
* the site's view, which the gateway sends in the signed roster (``Roster.day``): the last tap
  the gateway stored for each worker (decided or not: the NSSO may be down), from *any*
  terminal of the site. That is how the roof terminal knows the worker tapped in at the lobby.

When the terminal is offline it decides from what it knows and flags the event
``direction_guess``; the gateway checks the sequence again before relaying (docs/direction.md).
A tap more than a shift after a worker's last ``in`` (``ShiftRule``) starts a new shift with
``in`` and is flagged ``missing_out``: the out of the day before is for the employer to resolve.
A terminal can also be fixed to one direction (an entry or an exit reader), flagged
``fixed_direction``. Everything here is pure: the state comes in, a :class:`Decision` goes out.

==========================  ===========  ==============================================
last attendance tap         no key       break key held (or inside a break window)
==========================  ===========  ==============================================
none / ``out``              ``in``       ``break_start`` + odd_sequence
``in`` / ``break_end``      ``out``      ``break_start``
``break_start``             ``break_end`` ``break_end``
older than a shift          ``in`` + missing_out (whatever the key)
==========================  ===========  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from siteclock.protocol import DayEntry, Flag, Kind
from siteclock.shift import ShiftRule

WORKING = (Kind.IN, Kind.BREAK_END, Kind.BREAK_START)
"""After one of these the worker is on the site: a shift boundary means an ``out`` is missing."""


class Direction(StrEnum):
    """A terminal's ``capture.direction``: inferred (default), or fixed for entry/exit readers."""

    INFERRED = "inferred"
    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class LastTap:
    """The last attendance tap known for a worker: its kind and time (terminal wall clock)."""

    kind: Kind
    wall_ns: int


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    flags: tuple[str, ...] = ()


def decide(
    last: LastTap | None,
    *,
    now_ns: int,
    break_wanted: bool = False,
    direction: Direction = Direction.INFERRED,
    rule: ShiftRule = ShiftRule(),  # noqa: B008 - frozen, shared safely
    guess: bool = False,
) -> Decision:
    """The kind of a tap at ``now_ns`` after ``last``, and the flags that explain it.

    ``break_wanted``: the break key is held, or the tap is inside a break window while working.
    ``guess``: the terminal does not have the site's view (offline): an inferred kind is flagged.
    """
    flags: list[str] = []
    if last is not None and last.kind in WORKING and last.wall_ns < now_ns and rule.new_shift(
        last.wall_ns, now_ns
    ):
        flags.append(Flag.MISSING_OUT)
        last, break_wanted = None, False  # a new shift starts with `in`, key or no key
    elif last is not None and last.kind is Kind.OUT and rule.new_shift(last.wall_ns, now_ns):
        last = None
    previous = last.kind if last is not None else None
    working = previous is not None and previous.at_work_after
    on_break = previous is Kind.BREAK_START
    if direction is Direction.IN:
        kind = Kind.BREAK_END if on_break else Kind.IN
        odd = working
        flags.append(Flag.FIXED_DIRECTION)
    elif direction is Direction.OUT:
        kind = Kind.BREAK_START if break_wanted and working else Kind.OUT
        odd = not (working or on_break)
        flags.append(Flag.FIXED_DIRECTION)
    else:
        if on_break:
            kind, odd = Kind.BREAK_END, False
        elif break_wanted:
            kind, odd = Kind.BREAK_START, not working
        else:
            kind, odd = (Kind.OUT if working else Kind.IN), False
        if guess:
            flags.append(Flag.DIRECTION_GUESS)
    if odd:
        flags.append(Flag.ODD_SEQUENCE)
    return Decision(kind, tuple(flags))


class WorkerStates:
    """What one terminal knows of each worker's last attendance tap on its workplace.

    Two sources, kept apart and compared at each tap: ``local`` (this terminal's own taps,
    loaded from the outbox and updated after each recorded tap) and ``site`` (the gateway's
    view from the roster, replaced whole at each roster). The newer one wins. Keys are the
    roster's pseudonymous worker reference; a badge the roster does not know is keyed
    ``badge:<badge>``, so an unknown (e.g. enrolment) tap never moves a known worker's state.
    """

    def __init__(self, local: dict[str, tuple[Kind, int]] | None = None) -> None:
        self._local = {key: LastTap(kind, wall) for key, (kind, wall) in (local or {}).items()}
        self._site: dict[str, LastTap] = {}

    def apply_site(self, day: Iterable[DayEntry]) -> None:
        self._site = {d.worker: LastTap(d.kind, d.wall_ns) for d in day}

    def last(self, key: str) -> LastTap | None:
        local, site = self._local.get(key), self._site.get(key)
        if local is None or site is None:
            return local or site
        return site if site.wall_ns > local.wall_ns else local

    def record(self, key: str, kind: Kind, wall_ns: int) -> None:
        self._local[key] = LastTap(kind, wall_ns)


def state_key(worker: str | None, badge: str) -> str:
    """The key of a tap's state: the worker when the roster knows the badge, else the badge."""
    return worker if worker is not None else f"badge:{badge}"
