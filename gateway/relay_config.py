"""The relay's timing, as plain data: read by the gateway's configuration file
(:mod:`gateway.config`, section ``[relay]``) and used by the relay (:mod:`gateway.relay`).

It lives apart from the relay so that the configuration layer imports no relay code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from siteclock.gateway.ciao.policy import PolicyConfig


@dataclass(frozen=True)
class RelayConfig:
    """Timing of the relay loop (seconds). Defaults suit production; tests shrink them."""

    idle_s: float = 1.0  # pause when a turn found nothing to do
    poll_interval_s: float = 10.0  # between two lookups of a pending registration
    poll_batch: int = 500  # pending rows looked at per turn
    poll_calls_per_turn: int = 4  # searches (or lookups) per turn: submission goes first
    ambiguous_settle_s: float = 30.0  # wait before searching: let a slow commit land first
    # An ambiguous row whose search CIaO keeps refusing goes to a person after this long.
    review_after_s: float = 3600.0
    verdict_timeout_s: float = 4 * 3600.0  # alert when an event has no final verdict by then
    rescan_s: float = 60.0  # full inbox rescan period
    batch_limit: int | None = None  # default: the profile's
    batches_per_turn: int = 10  # then polls, verdicts and alerts get their turn
    # Requeue backoff: full-jitter exponential from initial_wait_s, capped at max_wait_s. Also
    # the client's retry policy (gateway.service). There is no attempt limit on purpose.
    backoff: PolicyConfig = field(default_factory=lambda: PolicyConfig(max_wait_s=300.0))
    # A clock_unsynced event waits this long (from its arrival) for a sync point of its boot,
    # then goes with the terminal's own time and a note for the employer to review.
    unsynced_hold_s: float = 600.0
    unsynced_recheck_s: float = 10.0  # how often a held event looks for a sync point again
    # An event whose terminal's earlier event has not arrived waits this long for it (from its
    # own arrival), so the worker's in/out sequence is decided with it; a terminal resends what
    # is not acked within about 10 s. After this the event goes and the late one is flagged.
    gap_hold_s: float = 60.0
    gap_recheck_s: float = 0.5  # how often a held event looks for the missing one again
