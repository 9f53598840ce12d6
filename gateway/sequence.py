"""Each worker's sequence on a worksite, across all its terminals, checked before relaying.

A terminal decides a tap's direction from what it knows (its own taps, the site view it got
with its roster); the gateway sees every terminal of the site and checks again, in the order
of the taps' times (the corrected time when the relay has one), before an event becomes a
CIaO item. The rules (docs/direction.md has the table):

* The worker's previous relayed tap on the workplace, in time order, says what comes next:
  after an ``in`` an ``out``, otherwise an ``in``. A previous ``in`` more than a shift before
  (:class:`siteclock.shift.ShiftRule`) belongs to an earlier shift: its ``out`` is missing
  (issue ``missing_out``) and this tap starts the new shift.
* A terminal that *inferred* the direction is corrected when the site's sequence says the
  other way (issue ``direction_corrected``): the roof terminal that was offline and guessed
  ``in`` is sent as ``out`` after the lobby's ``in``.
* A terminal with a *fixed* direction (entry/exit reader) is believed; what does not fit is
  sent as tapped and flagged ``two_in`` (an ``in`` after an ``in``) or ``out_without_in``.
* A tap that arrives after a later tap of the same worker was already relayed (its terminal
  was offline) is flagged ``late``: the later one already went to the NSSO as it was decided
  then, and nothing is reordered or resent silently. The late tap is decided from the taps
  before it; the employer resolves the rest with a correction.

Every decision is kept in ``worker_sequence`` (the gateway database, written in the relay's own
transaction, so a decision exists exactly when its item was marked submitted). Issues are
counted (``sequence.<issue>``), logged with the worker's pseudonymous reference (never the
INSS), and listed by :meth:`SequenceCheck.issues` for the employer. The site view the gateway
puts in each terminal's roster (:meth:`SiteDay.day`) is each worker's newest decided tap, or a
newer attendance tap the gateway has stored but not decided yet (the NSSO is down): a tap is
part of the worker's day on the site as soon as the gateway holds it.

Example (inside the relay)::

    check = SequenceCheck(store.db, counters=counters)   # the relay's GatewayDB
    check.start_batch(rows)
    kind = check.decide(row, worker_ref="w-17", wall_ns=wall)   # "in" or "out"
    with store.tx() as db:
        check.commit(db, submitted_keys)
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.gateway.db import (
    RELAY_BUSY_TIMEOUT_S,
    GatewayDB,
    OnGatewayDB,
    db_location,
    missing_file,
)
from siteclock.log import fields
from siteclock.protocol import NON_ATTENDANCE_FLAGS, DayEntry, Flag, Kind
from siteclock.shift import NS_PER_HOUR, ShiftRule

log = logging.getLogger(__name__)


class Issue:
    """What the employer must look at (the ``issues`` column)."""

    CORRECTED = "direction_corrected"  # an inferred direction the site's sequence overrode
    TWO_IN = "two_in"  # a fixed entry reader's `in` after an `in`
    OUT_WITHOUT_IN = "out_without_in"  # a fixed exit reader's `out` with no `in` before it
    MISSING_OUT = "missing_out"  # a new shift began after an `in` without an `out`
    LATE = "late"  # a later tap of this worker had already been relayed


SITE_DAY_WINDOW_NS = 48 * NS_PER_HOUR
"""How far back the site view in a roster reaches, from the site's newest tap: past a shift gap
and a night, so a terminal sees yesterday's ``in`` and flags the ``out`` that is missing."""

FUTURE_SLACK_NS = 60 * 1_000_000_000
"""How far after its arrival at the gateway a stored tap may be dated and still be shown (the
terminal's and the gateway's clocks differ a little even when both are synced)."""


@dataclass(frozen=True)
class SequenceConfig:
    """``[sequence]`` in the gateway's configuration: the site's shift rule, which should be
    the one its terminals use (``[capture] shift_gap_h`` / ``shift_calendar_day``).

    ``shift_gap_h``: a tap more than this many hours after the worker's last one starts a new
    shift (an ``in`` before it lacks its ``out``: ``missing_out``). ``shift_calendar_day``: the
    first tap of a new local calendar day (the gateway's time zone) starts one too."""

    shift_gap_h: float = 14.0
    shift_calendar_day: bool = False

    def __post_init__(self) -> None:
        if not self.shift_gap_h > 0:
            raise ValueError(f"shift_gap_h must be a positive number of hours: {self.shift_gap_h}")

    @property
    def rule(self) -> ShiftRule:
        return ShiftRule(self.shift_gap_h, self.shift_calendar_day)


def ciao_direction(kind: Kind) -> str:
    """The CIaO type a terminal kind stands for: a break starts with ``out``, ends with ``in``."""
    return "in" if kind.at_work_after else "out"


@dataclass(frozen=True, slots=True)
class Prior:
    """The worker's relayed tap just before the one being decided."""

    ciao_type: str
    wall_ns: int


@dataclass(frozen=True, slots=True)
class Judgement:
    ciao_type: str
    issues: tuple[str, ...] = ()


def judge(
    prior: Prior | None,
    *,
    kind: Kind,
    flags: Collection[str],
    wall_ns: int,
    rule: ShiftRule,
    late: bool = False,
) -> Judgement:
    """The CIaO type a tap gets after ``prior``, and the issues it raises. Pure."""
    issues: list[str] = []
    # The terminal's `missing_out` also ends a shift: its own rule (e.g. a new calendar day) is
    # the site's setting, which the gateway's default rule may not know.
    if prior is not None and (rule.new_shift(prior.wall_ns, wall_ns) or Flag.MISSING_OUT in flags):
        if prior.ciao_type == "in":
            issues.append(Issue.MISSING_OUT)
        prior = None
    elif Flag.MISSING_OUT in flags:
        # The terminal knew of an `in` the gateway never decided: keep its word for the employer.
        issues.append(Issue.MISSING_OUT)
    expected = "out" if prior is not None and prior.ciao_type == "in" else "in"
    tapped = ciao_direction(kind)
    if tapped == expected:
        chosen = tapped
    elif Flag.FIXED_DIRECTION in flags:
        chosen = tapped  # an entry/exit reader says what the worker did
        issues.append(Issue.TWO_IN if tapped == "in" else Issue.OUT_WITHOUT_IN)
    else:
        chosen = expected
        issues.append(Issue.CORRECTED)
    if late:
        issues.append(Issue.LATE)
    return Judgement(chosen, tuple(issues))


@dataclass
class _Decided:
    workplace: str
    worker_ref: str
    wall_ns: int
    kind: str
    ciao_type: str
    issues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Tap:
    """An attendance tap of the worker not decided yet (still queued, unresolved, held)."""

    key: tuple[str, int]
    kind: Kind
    wall_ns: int
    flags: frozenset[str]


@dataclass
class SequenceCheck:
    """Decides the CIaO type of each event the relay maps, from the worker's site sequence.

    Uses the relay's connection (one thread). The decision does not depend on the order in
    which the relay happens to take rows (it takes a backlog terminal by terminal): the
    worker's taps are replayed in time order from the last decided one before this tap,
    through every tap of theirs the gateway holds but has not decided yet, so a tap decided
    early and one decided later agree. Decisions of the batch being prepared are held in
    memory and written by :meth:`commit` inside the transaction that marks it submitted.
    """

    db: GatewayDB
    counters: Counter[str] = field(default_factory=Counter)
    rule: ShiftRule = field(default_factory=ShiftRule)
    _batch: dict[tuple[str, int], _Decided] = field(default_factory=dict)
    _inbox: dict[tuple[str, int], tuple[frozenset[str], int]] = field(default_factory=dict)
    _badges: dict[str, list[str]] = field(default_factory=dict)  # per batch: links may change
    _batch_keys: set[tuple[str, int]] = field(default_factory=set)  # decided in time order

    def __post_init__(self) -> None:
        self.db.index_inbox_by_badge()

    # ----------------------------------------------------------------- the relay's calls

    def start_batch(
        self,
        rows: Sequence[Mapping[str, Any]],
        wall_ns: Mapping[tuple[str, int], int] | None = None,
    ) -> list[Mapping[str, Any]]:
        """Forget the last batch's decisions, read these rows' flags and arrival in one
        query, and return the rows in time order: a worker's taps are decided oldest first.
        ``wall_ns``: the time each row will be submitted with, where it is not the row's own
        stamp (a tap dated from a sync point)."""
        self._batch.clear()
        self._badges.clear()
        self._batch_keys = {(r["terminal"], r["seq"]) for r in rows}
        self._inbox = dict(self._read_inbox(list(self._batch_keys)))
        when = wall_ns or {}

        def moment(r: Mapping[str, Any]) -> tuple[int, str, int]:
            return when.get((r["terminal"], r["seq"]), r["wall_ns"]), r["terminal"], r["seq"]

        return sorted(rows, key=moment)

    def decide(self, row: Mapping[str, Any], *, worker_ref: str, wall_ns: int) -> str:
        """The kind to send for ``row`` (``in`` or ``out``), decided once per event: a row
        submitted again after a failure keeps its first decision."""
        key = (row["terminal"], row["seq"])
        kept = self._batch.get(key) or self._stored(key)
        if kept is not None:
            self._batch[key] = kept
            return kept.ciao_type
        workplace, kind = row["workplace"], Kind(row["kind"])
        if key not in self._inbox:
            self._inbox.update(self._read_inbox([key]))
        flags, received_ns = self._inbox.get(key, (frozenset(), 0))
        prior = self._prior(workplace, worker_ref, wall_ns, key)
        for tap in self._undecided(workplace, worker_ref, prior, wall_ns, key):
            step = judge(prior, kind=tap.kind, flags=tap.flags, wall_ns=tap.wall_ns,
                         rule=self.rule)  # fmt: skip
            prior = Prior(step.ciao_type, tap.wall_ns)
        late = self._relayed_after(workplace, worker_ref, wall_ns, received_ns)
        verdict = judge(prior, kind=kind, flags=flags, wall_ns=wall_ns, rule=self.rule, late=late)
        self._batch[key] = _Decided(
            workplace, worker_ref, wall_ns, str(kind), verdict.ciao_type, verdict.issues
        )
        for issue in verdict.issues:
            self.counters[f"sequence.{issue}"] += 1
        if verdict.issues:
            log.warning(
                "attendance sequence needs the employer",
                extra=fields(terminal=key[0], seq=key[1], worker=worker_ref, kind=kind,
                             sent=verdict.ciao_type, issues=",".join(verdict.issues)),
            )  # fmt: skip
        return verdict.ciao_type

    def commit(self, db: GatewayDB, keys: Iterable[tuple[str, int]], now_ns: int) -> None:
        """Write the decisions of ``keys`` (the rows actually marked submitted) in the relay's
        transaction (``db``, inside its ``atomic()``); decisions of rows dropped from the batch
        are forgotten."""
        rows = []
        for key in keys:
            d = self._batch.get(key)
            if d is not None:
                rows.append((*key, d.workplace, d.worker_ref, d.wall_ns, d.kind, d.ciao_type,
                             ",".join(d.issues), now_ns))  # fmt: skip
        db.record_decisions(rows)
        self._batch.clear()

    def issues(self, workplace: str | None = None) -> list[dict[str, Any]]:
        """Every decision with an issue, oldest tap first: what the employer must resolve."""
        return issues_of(self.db, workplace)

    # ----------------------------------------------------------------- queries

    def _read_inbox(
        self, keys: list[tuple[str, int]]
    ) -> Iterable[tuple[tuple[str, int], tuple[frozenset[str], int]]]:
        return self.db.inbox_flags(keys)

    def _stored(self, key: tuple[str, int]) -> _Decided | None:
        row = self.db.decision(key)
        if row is None:
            return None
        return _Decided(*row[:5], tuple(i for i in row[5].split(",") if i))

    def _prior(
        self, workplace: str, worker_ref: str, wall_ns: int, key: tuple[str, int]
    ) -> Prior | None:
        """The worker's newest *decided* tap at or before ``wall_ns`` (stored or this batch)."""
        found = self.db.prior_decision(workplace, worker_ref, wall_ns, key)
        best = Prior(*found) if found is not None else None
        for other, d in self._batch.items():
            if other == key or d.workplace != workplace or d.worker_ref != worker_ref:
                continue
            if d.wall_ns <= wall_ns and (best is None or d.wall_ns >= best.wall_ns):
                best = Prior(d.ciao_type, d.wall_ns)
        return best

    def _undecided(
        self,
        workplace: str,
        worker_ref: str,
        prior: Prior | None,
        wall_ns: int,
        key: tuple[str, int],
    ) -> list[_Tap]:
        """The worker's attendance taps between ``prior`` and ``wall_ns`` that the gateway
        holds but has not decided (another terminal's backlog), oldest first. Left out: self-test
        and enrolment taps (not attendance); taps of this batch (decided in time order, each
        after the ones before it); later events of this tap's own terminal (they happened after
        it, whatever their stamp says); and taps whose clock was not synced (their stamp is not
        their time: they are decided once dated, and flagged ``late`` if a later one went)."""
        since = (
            prior.wall_ns if prior is not None else wall_ns - 2 * int(self.rule.gap_h * NS_PER_HOUR)
        )
        badges = self._badges.get(worker_ref)
        if badges is None:
            badges = self._badges[worker_ref] = self.db.worker_badges(worker_ref)
        if not badges:
            return []
        rows = self.db.undecided_taps(badges, since, wall_ns, workplace)
        taps = []
        for terminal, seq, kind, tap_ns, text in rows:
            flags = frozenset(json.loads(text))
            if (terminal, seq) == key or (terminal, seq) in self._batch:
                continue
            if (terminal, seq) in self._batch_keys or (terminal == key[0] and seq > key[1]):
                continue
            if flags & NON_ATTENDANCE_FLAGS or Flag.CLOCK_UNSYNCED in flags:
                continue
            taps.append(_Tap((terminal, seq), Kind(kind), tap_ns, flags))
        return taps

    def _relayed_after(
        self, workplace: str, worker_ref: str, wall_ns: int, received_ns: int
    ) -> bool:
        """True when a later tap of this worker had already been decided when this one
        arrived at the gateway: it went to the NSSO without knowing of this tap."""
        return self.db.decided_later(workplace, worker_ref, wall_ns, received_ns)


def _shown(worker: str, kind: str, ciao_type: str, wall_ns: int) -> DayEntry:
    """A decided tap as the site view shows it: the terminal's own kind when the sequence
    agreed with it (so a break stays a break), else the CIaO type that was sent."""
    recorded = Kind(kind)
    shown = recorded if ciao_direction(recorded) == ciao_type else Kind(ciao_type)
    return DayEntry(worker, shown, wall_ns)


class SiteDay(OnGatewayDB):
    """Read side for the roster loop: each worker's newest attendance tap per workplace.

    Two sources, newest wins: the taps the relay *decided* (``worker_sequence``, with the CIaO
    type the sequence supports) and the attendance taps the gateway has *stored* but not
    decided yet (the inbox: the relay is waiting out an NSSO outage, holds the tap for a clock
    sync, or there is no ``[ciao]`` at all). A stored tap is a fact of the worker's day as soon
    as it is committed: the site's other terminals must learn it then, not when the NSSO is
    reachable again, or they record the wrong direction in the meantime.

    Its own connection (the roster thread is not the relay's); the table is created if the
    relay has not run yet, so a gateway without ``[ciao]`` still publishes the stored taps.
    """

    busy_timeout_s = RELAY_BUSY_TIMEOUT_S

    def __init__(self, db_path: Path | str | GatewayDB) -> None:
        super().__init__(db_path)
        self.db.index_inbox_by_badge()

    def version(self) -> tuple[int, int]:
        """Changes whenever the relay decides a tap or the gateway stores one, on any
        workplace (two index look-ups, whatever the size of the file): whether that changed a
        workplace's view is for the caller to see in :meth:`day`."""
        return self.db.sequence_version()

    def issues(self, workplace: str | None = None) -> list[dict[str, Any]]:
        """Every decision with an issue, oldest tap first: what the employer must resolve."""
        return issues_of(self.db, workplace)

    def day(self, workplace: str, badges: Mapping[str, str] | None = None) -> list[DayEntry]:
        """Each worker's newest attendance tap on the workplace, within two days of the site's
        newest tap. A decided tap shows the terminal's own kind when the sequence agreed with
        it (so a break stays a break), else the CIaO type that was sent; a stored tap not
        decided yet shows the kind its terminal recorded.

        ``badges`` (badge -> worker reference: the workplace's roster) says whose taps to look
        up, each through an index (a few look-ups per worker, however long the site's
        history); without it, every worker's decided taps, and no stored ones."""
        if badges is None:
            newest = self._decided_all(workplace)
        else:
            newest = {}
            for worker in set(badges.values()):
                found = self._decided(workplace, worker)
                if found is not None:
                    newest[worker] = found
            for badge, worker in badges.items():
                known = newest.get(worker)
                # Only a tap newer than the worker's decided one can change the view; the
                # bound keeps the index walk to the taps since then. A tap dated after it
                # reached the gateway comes from a clock gone wrong: it would hide every other
                # tap (newest wins, and the window follows the newest), so it waits for the
                # relay's corrected time instead.
                since = known.wall_ns if known is not None else -(2**63)
                row = self.db.newest_stored_tap(badge, since, workplace, FUTURE_SLACK_NS)
                if row is not None and (known is None or row[1] > known.wall_ns):
                    newest[worker] = DayEntry(worker, Kind(row[0]), row[1])
        if not newest:
            return []
        since = max(d.wall_ns for d in newest.values()) - SITE_DAY_WINDOW_NS
        return [newest[w] for w in sorted(newest) if newest[w].wall_ns >= since]

    def _decided(self, workplace: str, worker: str) -> DayEntry | None:
        row = self.db.newest_decision(workplace, worker)
        return _shown(worker, *row) if row is not None else None

    def _decided_all(self, workplace: str) -> dict[str, DayEntry]:
        rows = self.db.newest_decisions(workplace, SITE_DAY_WINDOW_NS)
        return {worker: _shown(worker, *rest) for worker, *rest in rows}


def issues_of(db: GatewayDB, workplace: str | None = None) -> list[dict[str, Any]]:
    """Every sequence decision with an issue (of ``workplace``), oldest tap first."""
    names = ("terminal", "seq", "workplace", "worker_ref", "wall_ns", "kind", "sent", "issues")
    return [
        {**dict(zip(names, row, strict=True)), "issues": row[7].split(",")}
        for row in db.sequence_issues(workplace)
    ]


# --------------------------------------------------------------------------- the employer's list

ADVICE = {
    Issue.CORRECTED: "the terminal guessed the other way; check the day, correct if needed",
    Issue.TWO_IN: "an entry reader saw two `in`: an `out` is missing between them",
    Issue.OUT_WITHOUT_IN: "an exit reader saw an `out` with no `in` before it",
    Issue.MISSING_OUT: "the shift before this tap has no `out`: ask the worker, then correct",
    Issue.LATE: "a later tap had already been sent: check the order, correct if needed",
}


def cli(argv: list[str]) -> int:
    """``siteclock sequence-issues --db gateway.db``: the taps the employer must look at."""
    import argparse
    import datetime as dt

    parser = argparse.ArgumentParser(
        prog="siteclock sequence-issues",
        description="List the attendance taps whose in/out sequence needs the employer "
        "(docs/direction.md). Worker references only: no INSS is shown.",
    )
    parser.add_argument(
        "--db", type=db_location, required=True,
        help="the gateway's SQLite file or postgresql:// URL",
    )  # fmt: skip
    parser.add_argument("--workplace", help="only this Declaration of Works reference")
    args = parser.parse_args(argv)
    if missing_file(args.db):
        print(f"siteclock sequence-issues: {args.db}: no such file", file=sys.stderr)
        return 2
    day = SiteDay(args.db)
    try:
        found = day.issues(args.workplace)
    finally:
        day.close()
    for item in found:
        moment = dt.datetime.fromtimestamp(item["wall_ns"] / 1e9, dt.UTC)
        print(f"{moment:%Y-%m-%d %H:%M:%S}Z {item['workplace']} {item['worker_ref']:<12} "
              f"{item['terminal']}#{item['seq']} tapped {item['kind']}, sent {item['sent']}: "
              + "; ".join(f"{i} ({ADVICE.get(i, '?')})" for i in item["issues"]))  # fmt: skip
    print(f"{len(found)} tap(s) to review")
    return 0
