"""Heartbeats: a terminal's retained status, recorded in the terminal registry (and, given a
:class:`~gateway.terminal_health.TerminalHealth`, as online/offline and health figures). A
signed clock reading in it (``clock_proof``) becomes a sync point the relay dates unsynced taps
from; an unsigned one corrects nothing (docs/protocol.md).

Heartbeats are checked as they arrive and written together: :meth:`Heartbeats.flush` records
every heartbeat of an intake group, with the health it implies, in one transaction (one commit,
one fsync for hundreds), where each used to be a synced transaction of its own, the gateway's
largest cost at 10,000 terminals (docs/scaling.md)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from siteclock.gateway.intake_checks import VerifierCache
from siteclock.gateway.intake_limits import HEARTBEAT_BURST, HEARTBEATS_PER_S
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
        self.budget = TerminalBudget(rate=HEARTBEATS_PER_S, burst=HEARTBEAT_BURST, clock=clock)
        self._due: list[tuple[str, dict[str, Any], ClockProof | None]] = []

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
        verifier = self.verifiers.get(terminal)
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
        self._due.append((terminal, status, proof))

    def flush(self) -> int:
        """Record the heartbeats checked since the last flush, in one transaction. A storage
        failure is raised with nothing recorded (the caller withholds the PUBACKs: the broker
        delivers them again). Returns how many were recorded."""
        due, self._due = self._due, []
        if not due:
            return 0
        health = self.health
        # the health rows join the heartbeats' transaction when they share the connection
        shared = health is not None and health.db is self.registry.db
        try:
            with self.registry.db.atomic():
                for terminal, status, proof in due:
                    self.registry.record_heartbeat(terminal, status, proof=proof)
                    if shared:
                        health.on_status(terminal, status)  # type: ignore[union-attr]
        except Exception:
            self._due = due + self._due
            raise
        if health is not None and not shared:
            for terminal, status, _proof in due:
                health.on_status(terminal, status)
        self.stats["heartbeats"] += len(due)
        return len(due)
