"""The gateway's inbox: every verified event, exactly once, unique on (terminal, seq).

This is the gateway's end of the effectively-once chain:
an event is acknowledged to the terminal only after the transaction that holds it has committed
(WAL, ``synchronous=FULL``). The same event arriving again (same digest) is reported as a
duplicate so the caller re-acknowledges it; the same sequence number with a *different* digest
is a security alert, recorded, and never stored over the first.

The hash chain is checked here, per terminal, as events are stored: an event whose ``prev`` does
not match the digest of the stored event before it (or whose digest is not the ``prev`` of the
stored event after it) is a ``chain_break`` security alert. The event is stored all the same:
it is evidence, and dropping it would hide what happened. Gaps (seqs never received) become
``seq_gap`` alerts through :meth:`Inbox.record_alert` once they have lasted (see the intake).

The tables live in the gateway data layer (:mod:`siteclock.gateway.db`), with their schema
and every statement on them; the relay reads the same rows through it.

Example::

    inbox = Inbox(tmp / "gateway.db")
    [result] = inbox.put("t-hall-01", [signed], received_ns=time.time_ns())
    result.status            # PutStatus.STORED, then DUPLICATE on a resend
    inbox.gaps()             # [Gap("t-hall-01", 2, 4)] when seqs 2..4 never arrived
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from siteclock.gateway.db import OnGatewayDB
from siteclock.protocol import GENESIS_HASH, Event, ProtocolError, SignedEvent

CHAIN_BREAK = "chain_break"
SEQ_CONFLICT = "seq_conflict"
SEQ_GAP = "seq_gap"


class PutStatus(StrEnum):
    STORED = "stored"  # new, committed
    DUPLICATE = "duplicate"  # already held with the same digest: acknowledge again
    CONFLICT = "conflict"  # same (terminal, seq), different digest: security alert


@dataclass(frozen=True, slots=True)
class PutResult:
    seq: int
    status: PutStatus
    terminal: str = ""
    chain_break: bool = False
    """Stored, but it does not link to a stored neighbour: a security alert was recorded."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers ``first..last`` of ``terminal`` missing below its highest stored seq."""

    terminal: str
    first: int
    last: int


class Inbox(OnGatewayDB):
    """The inbox on the gateway database; every ``put`` is one transaction."""

    def put(
        self,
        terminal: str,
        events: Sequence[tuple[SignedEvent, Event]],
        *,
        received_ns: int,
    ) -> list[PutResult]:
        """Store verified events of one terminal in one transaction (committed on return).

        ``events`` pairs each signed envelope with its decoded, already verified event.
        """
        return self.put_many([(terminal, s, e) for s, e in events], received_ns=received_ns)

    def put_many(
        self,
        items: Sequence[tuple[str, SignedEvent, Event]],
        *,
        received_ns: int,
    ) -> list[PutResult]:
        """Store verified events of any terminals in ONE transaction: a group commit, so one
        fsync covers many MQTT messages when a hundred terminals send single events.
        Results are in the order of ``items``."""
        results: list[PutResult] = []
        # atomic() takes the write lock first: nobody inserts between look and write
        with self.db.atomic():
            held, bodies = self._held(items)
            prevs: dict[tuple[str, int], bytes] = {}  # prev hash of rows new in this call
            new_rows, alerts = [], []
            for terminal, signed, ev in items:
                key, digest = (terminal, ev.seq), signed.digest
                if key not in held:
                    held[key] = digest
                    prevs[key] = ev.prev_hash
                    new_rows.append(inbox_row(terminal, signed, ev, received_ns))
                    env = signed.envelope
                    broken = _broken_link(terminal, ev, digest, held, prevs, bodies)
                    if broken is not None:
                        neighbour, detail = broken
                        alerts.append((received_ns, terminal, ev.seq, CHAIN_BREAK, neighbour,
                                       digest, env.body, detail))  # fmt: skip
                    results.append(
                        PutResult(ev.seq, PutStatus.STORED, terminal, broken is not None)
                    )
                elif held[key] == digest:
                    results.append(PutResult(ev.seq, PutStatus.DUPLICATE, terminal))
                else:
                    why = "same seq, different event"
                    alerts.append((received_ns, terminal, ev.seq, SEQ_CONFLICT, held[key],
                                   digest, signed.envelope.body, why))  # fmt: skip
                    results.append(PutResult(ev.seq, PutStatus.CONFLICT, terminal))
            self.db.store_events(new_rows, alerts)
        return results

    def _held(
        self, items: Sequence[tuple[str, SignedEvent, Event]]
    ) -> tuple[dict[tuple[str, int], bytes], dict[tuple[str, int], bytes]]:
        """Digests and bodies already stored for the (terminal, seq) pairs of ``items`` and
        their neighbours (seq - 1 and seq + 1, for the chain check)."""
        wanted: dict[str, set[int]] = {}
        for terminal, _, ev in items:
            wanted.setdefault(terminal, set()).update((ev.seq - 1, ev.seq, ev.seq + 1))
        found = self.db.held_events(wanted)
        held = {key: digest for key, (digest, _) in found.items()}
        bodies = {key: body for key, (_, body) in found.items()}
        return held, bodies

    def record_alert(self, terminal: str, seq: int, kind: str, detail: str, *, at_ns: int) -> None:
        """A security alert that is not about one offered event (a gap, a rate limit)."""
        self.db.record_security_alert(terminal, seq, kind, detail, at_ns=at_ns)

    def missing(self, terminal: str, first: int, last: int) -> list[Gap]:
        """The runs of ``first..last`` of ``terminal`` not stored (now)."""
        held = self.db.stored_seqs(terminal, first, last)
        gaps, expected = [], first
        for seq in [*held, last + 1]:
            if seq > expected:
                gaps.append(Gap(terminal, expected, seq - 1))
            expected = seq + 1
        return gaps

    def alerted_gaps(self) -> set[tuple[str, int]]:
        """``(terminal, first missing seq)`` of every gap already alerted."""
        return self.db.alert_keys(SEQ_GAP)

    def max_seq(self, terminal: str) -> int:
        return self.db.max_seq(terminal)

    def gaps(self, terminal: str | None = None) -> list[Gap]:
        """Every run of missing seqs below each terminal's highest stored seq (from seq 1)."""
        return [Gap(t, lo, hi) for t, lo, hi in self.db.seq_gaps(terminal)]

    def count(self, terminal: str | None = None) -> int:
        return self.db.count_events(terminal)

    def rows(self, terminal: str) -> list[tuple[int, str, bytes]]:
        """``(seq, event_id, digest)`` of a terminal's stored events, in seq order."""
        return self.db.event_keys(terminal)

    def alerts(self, kind: str | None = None) -> list[tuple[str, int, str]]:
        """``(terminal, seq, kind)`` of every security alert (of ``kind``), oldest first."""
        return self.db.security_alerts(kind)


def inbox_row(terminal: str, signed: SignedEvent, ev: Event, received_ns: int) -> tuple:
    """The ``inbox`` row of a verified event, its columns in order (``InboxRow``)."""
    env = signed.envelope
    return (terminal, ev.seq, ev.event_id, signed.digest, env.body, env.alg, env.kid, env.sig,
            ev.workplace, str(ev.kind), ev.badge, ev.wall_ns, json.dumps(sorted(ev.flags)),
            received_ns, env.version)  # fmt: skip


def _broken_link(
    terminal: str,
    ev: Event,
    digest: bytes,
    held: dict[tuple[str, int], bytes],
    prevs: dict[tuple[str, int], bytes],
    bodies: dict[tuple[str, int], bytes],
) -> tuple[bytes | None, str] | None:
    """(the neighbour's digest, why) when ``ev`` does not link to a stored neighbour, else None.

    Only neighbours that are held are checked: a missing one is a gap, reported separately."""
    if ev.seq == 1 and ev.prev_hash != GENESIS_HASH:
        return None, "seq 1 does not start from the genesis hash"
    before = held.get((terminal, ev.seq - 1))
    if before is not None and before != ev.prev_hash:
        return before, f"seq {ev.seq} does not link to the stored seq {ev.seq - 1}"
    after = (terminal, ev.seq + 1)
    if after in held:
        next_prev = prevs.get(after)
        if next_prev is None:
            try:
                next_prev = Event.from_bytes(bodies[after]).prev_hash
            except (KeyError, ProtocolError):
                return held[after], f"the stored seq {ev.seq + 1} cannot be read to check its link"
        if next_prev != digest:
            return held[after], f"the stored seq {ev.seq + 1} does not link to seq {ev.seq}"
    return None
