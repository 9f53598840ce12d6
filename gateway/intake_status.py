"""Heartbeats: a terminal's retained status, recorded in the terminal registry (and, given a
:class:`~gateway.terminal_health.TerminalHealth`, as online/offline and health figures). A
signed clock reading in it (``clock_proof``) becomes a sync point the relay dates unsynced taps
from; an unsigned one corrects nothing (docs/protocol.md).

Heartbeats are checked as they arrive and written together: :meth:`Heartbeats.flush` records
every heartbeat held, with the health it implies, in one transaction (one commit, one fsync for
dozens), where each used to be a synced transaction of its own, the gateway's largest cost at
10,000 terminals (docs/scaling.md). The intake's worker holds them across its groups until
:meth:`Heartbeats.due` (see :data:`~gateway.intake_limits.HEARTBEAT_HOLD_MAX`) or until a group
of events is stored anyway, and PUBACKs them only once written."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from siteclock.gateway.intake_checks import VerifierCache
from siteclock.gateway.intake_limits import (
    HEARTBEAT_BURST,
    HEARTBEAT_HOLD_MAX,
    HEARTBEAT_HOLD_S,
    HEARTBEAT_IDLE_S,
    HEARTBEATS_PER_S,
)
from siteclock.gateway.intake_refusals import Refusals
from siteclock.gateway.ratelimit import TerminalBudget
from siteclock.gateway.terminal_health import TerminalHealth
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import ClockProof, ProtocolError, decode_status, verify_clock_proof

log = logging.getLogger(__name__)


class Heartbeats:
    """Records heartbeats within each terminal's heartbeat budget. ``stats`` gets
    ``heartbeats`` and ``unsigned_clock`` (a synced heartbeat without a clock proof)."""

    def __init__(
        self,
        registry: TerminalRegistry,
        verifiers: VerifierCache,
        refusals: Refusals,
        stats: Counter[str],
        clock: Callable[[], float],
        health: TerminalHealth | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.verifiers = verifiers
        self.refusals = refusals
        self.stats = stats
        self.clock = clock
        self.budget = TerminalBudget(rate=HEARTBEATS_PER_S, burst=HEARTBEAT_BURST, clock=clock)
        self._due: list[tuple[str, dict[str, Any], ClockProof | None]] = []
        self._since = 0.0
        """When the oldest heartbeat held arrived (``clock``)."""
        self.hold_max = HEARTBEAT_HOLD_MAX
        self.hold_s = HEARTBEAT_HOLD_S
        self.idle_s = HEARTBEAT_IDLE_S

    def __len__(self) -> int:
        """Heartbeats checked and held, not yet written."""
        return len(self._due)

    def due(self) -> bool:
        """Whether the heartbeats held should be written now (:attr:`hold_max` of them, or
        the oldest held :attr:`hold_s`; :data:`HEARTBEAT_HOLD_MAX` and :data:`HEARTBEAT_HOLD_S`
        by default)."""
        return bool(self._due) and (
            len(self._due) >= self.hold_max or self.clock() - self._since >= self.hold_s
        )

    def wait_s(self, most: float) -> float:
        """How long the worker may wait for messages before the heartbeats held are written:
        until they are due, and no longer than :attr:`idle_s` (:data:`HEARTBEAT_IDLE_S`: a
        quiet moment writes them at once)."""
        if not self._due:
            return most
        due_in = self._since + self.hold_s - self.clock()
        return max(0.0, min(most, self.idle_s, due_in))

    def handle(self, terminal: str, payload: bytes) -> None:
        if not self.budget.allow(terminal):
            self.refusals.rate_limited(terminal, "heartbeats")
            return
        self.budget.charge(terminal, 1)
        try:
            status = decode_status(payload)
        except ProtocolError as exc:
            reason = "status_too_large" if exc.reason == "too_large" else "bad_status"
            self.refusals.reject(reason, terminal)
            return
        # Without a proof nothing is checked with a key: a registered terminal is enough, and
        # the cached entry spares a registry read per heartbeat (KNOWN_TERMINAL_TTL_S).
        has_proof = status.get("clock_proof") is not None
        verifier = self.verifiers.get(terminal) if has_proof else self.verifiers.known(terminal)
        if verifier is None:
            self.refusals.reject("unknown_terminal", terminal)
            return
        proof: ClockProof | None = None
        try:
            proof = verify_clock_proof(status, terminal, verifier.keys)
        except ProtocolError as exc:
            self.refusals.reject("bad_clock_proof", terminal)
            log.warning(
                "SECURITY: heartbeat clock proof refused; no clock correction from it",
                extra=fields(terminal=terminal, reason=exc.reason),
            )
        clock = status.get("clock")
        if proof is None and isinstance(clock, dict) and clock.get("synced") is True:
            self.stats["unsigned_clock"] += 1  # a terminal from before clock proofs
        if not self._due:
            self._since = self.clock()
        self._due.append((terminal, status, proof))

    def flush(self) -> int:
        """Record the heartbeats held, in one transaction. A storage failure is raised with
        nothing recorded and the heartbeats still held (the caller withholds the PUBACKs: the
        broker delivers them again should the gateway stop). Returns how many were recorded."""
        held = len(self._due)
        if not held:
            return 0
        with self.flushing():
            pass
        return held

    @contextmanager
    def flushing(self) -> Iterator[None]:
        """One transaction for what the caller writes in the block and the heartbeats held
        (each recorded after the block): the intake's events and heartbeats, one commit. A
        failure, the caller's or the heartbeats', rolls back both and keeps the heartbeats
        held."""
        due, self._due = self._due, []
        health = self.health
        # the health rows join the heartbeats' transaction when they share the connection
        shared = health is not None and health.db is self.registry.db
        try:
            with self.registry.db.atomic():
                yield
                if due:
                    self.registry.record_heartbeats(due)
                    if shared:
                        health.on_statuses([(t, s) for t, s, _ in due])  # type: ignore[union-attr]
        except BaseException:
            self._due = due + self._due
            raise
        if health is not None and not shared and due:
            health.on_statuses([(t, s) for t, s, _ in due])
        self.stats["heartbeats"] += len(due)
