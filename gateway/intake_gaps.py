"""Gaps in a terminal's sequence: noticed as events are stored, and turned into ``seq_gap``
security alerts when still missing :data:`gateway.intake_limits.GAP_GRACE_S` later.

A terminal resends what is not acked within seconds, so a gap that lasts means events that will
never come (a wiped outbox, a terminal swapped or tampered with). The watch survives a restart:
gaps already in the inbox and not yet alerted are watched again (:meth:`GapWatch.seed`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from siteclock.gateway.db import DatabaseError
from siteclock.gateway.intake_limits import GAP_CHECK_S
from siteclock.gateway.store import SEQ_GAP, Gap, Inbox
from siteclock.log import fields

log = logging.getLogger(__name__)


class GapWatch:
    """Each terminal's highest stored seq, and the gaps waiting out their grace period.
    ``stats`` gets ``gaps_detected`` and ``gaps_alerted``."""

    def __init__(
        self,
        inbox: Inbox,
        stats: Counter[str],
        *,
        clock: Callable[[], float],
        grace_s: float,
        shared: bool = False,
    ) -> None:
        """``shared``: this intake is one of several in a share group, so it sees only some
        of each terminal's messages and most jumps are filled by another gateway: noted
        quietly (debug), and only what is still missing after ``grace_s`` is loud (the
        alert)."""
        self._note_level = logging.DEBUG if shared else logging.WARNING
        self.inbox = inbox
        self.stats = stats
        self.clock = clock
        self.grace_s = grace_s
        self._pending: list[tuple[float, Gap]] = []
        self._checked = clock()
        self._max_seq: dict[str, int] = {}

    def __len__(self) -> int:
        """Gaps seen and not yet either filled or alerted."""
        return len(self._pending)

    def learn(self, terminals: Iterable[str]) -> None:
        """Read the high mark of terminals not seen yet (before their events are stored)."""
        known = self._max_seq
        # per terminal of the group, not set(known): that copied every terminal ever seen
        # (20,000 at scale) on every group
        for terminal in set(terminals):
            if terminal not in known:
                known[terminal] = self.inbox.max_seq(terminal)

    def note(self, terminal: str, stored: Iterable[int]) -> None:
        """Report a jump in a terminal's sequence as it happens; :meth:`Inbox.gaps` lists them."""
        high = self._max_seq[terminal]
        for seq in sorted(stored):
            if seq > high + 1:
                self.stats["gaps_detected"] += 1
                self._pending.append((self.clock(), Gap(terminal, high + 1, seq - 1)))
                log.log(
                    self._note_level,
                    "gap in a terminal's sequence",
                    extra=fields(terminal=terminal, missing_from=high + 1, missing_to=seq - 1),
                )
            high = max(high, seq)
        self._max_seq[terminal] = high

    def seed(self) -> None:
        """Gaps already in the inbox when the intake starts, not yet alerted: watched again, so
        a restart neither forgets nor repeats an alert."""
        alerted = self.inbox.alerted_gaps()
        now = self.clock()
        for gap in self.inbox.gaps():
            if (gap.terminal, gap.first) not in alerted:
                self._pending.append((now, gap))

    def check(self) -> None:
        """Turn gaps that lasted :attr:`grace_s` into ``seq_gap`` security alerts."""
        now = self.clock()
        if not self._pending or now - self._checked < GAP_CHECK_S:
            return
        self._checked = now
        due = [g for at, g in self._pending if now - at >= self.grace_s]
        self._pending = [(at, g) for at, g in self._pending if now - at < self.grace_s]
        for watched in due:
            try:
                for gap in self.inbox.missing(watched.terminal, watched.first, watched.last):
                    detail = f"seqs {gap.first}..{gap.last} never arrived"
                    self.inbox.record_alert(
                        gap.terminal, gap.first, SEQ_GAP, detail, at_ns=time.time_ns()
                    )
                    self.stats["gaps_alerted"] += 1
                    log.error(
                        "SECURITY: events missing from a terminal's chain",
                        extra=fields(terminal=gap.terminal, first=gap.first, last=gap.last),
                    )
            except DatabaseError:
                log.exception("gap check failed; will retry")
                self._pending.append((now, watched))
