"""What the relay's scheduled stages (reconciliation, polling) share: a turn does nothing while
CIaO asked the relay to wait or when no row is due; otherwise it handles the due rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siteclock.gateway.relay import Relay


class DueRowsStage:
    """One relay stage run each turn on the rows that are due; :meth:`run` returns how many
    rows it settled (0 when it waited or nothing was due)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def run(self) -> int:
        if self.relay.told_to_wait():
            return 0
        now = self.relay.clock_ns()
        rows = self.due(now)
        return self.handle(rows, now) if rows else 0

    def due(self, now: int) -> Sequence[Any]:
        raise NotImplementedError

    def handle(self, rows: Sequence[Any], now: int) -> int:
        raise NotImplementedError
