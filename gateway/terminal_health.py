"""Terminal health: online or offline, and the figures of each terminal's last heartbeat.

A terminal says it is online with every heartbeat (its retained status, DESIGN decision 7) and
offline through its Last Will (the broker publishes it when the connection drops) or a clean
stop. The Last Will alone is not enough: a broker keeps a half-open connection for 1.5 keepalive
periods, and a terminal whose heartbeats stop while its socket lingers would stay "online"
forever. So each heartbeat sets a deadline (its interval, as the terminal reports it or as
configured, plus a margin), and :meth:`TerminalHealth.sweep`, driven by an injected clock, turns
every terminal past its deadline offline (``silent``). Going offline and coming back, and a
reader's fault and recovery, are logged; refusals are counted per terminal and reason.

A heartbeat is hostile input like any message: each figure is kept only when it has the
expected type and a sane range, and nothing from it reaches a log line but the terminal id.

Example::

    health = TerminalHealth(db, HealthConfig(heartbeat_s=30, margin_s=10))
    health.on_status("t-hall-01", decode_status(payload))   # from the intake
    health.sweep()                                          # every sweep_s, from the gateway
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteclock.gateway.db import GatewayDB, OnGatewayDB
from siteclock.log import fields

log = logging.getLogger(__name__)

SILENT = "silent"
"""The offline reason the sweeper gives: no heartbeat within interval + margin."""
MAX_PENDING_REFUSALS = 100_000
"""Distinct (terminal, reason) pairs held between two sweeps: a bound on memory under a flood."""
HEARTBEAT_RANGE_S = (0.2, 3600.0)
"""A reported heartbeat interval outside this range is ignored (the configured one is used)."""


@dataclass(frozen=True)
class HealthConfig:
    """``heartbeat_s``: the interval expected of a terminal that does not report its own
    (terminals' ``uplink.heartbeat_s``, 30 s by default). ``margin_s``: how late a heartbeat
    may be before the terminal counts as offline (network and broker delay). ``sweep_s``: how
    often the gateway looks for silent terminals. A silent terminal turns offline at most
    ``heartbeat + margin + sweep`` after its last heartbeat."""

    heartbeat_s: float = 30.0
    margin_s: float = 10.0
    sweep_s: float = 1.0

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or self.margin_s < 0 or self.sweep_s <= 0:
            raise ValueError("health: heartbeat_s and sweep_s must be > 0, margin_s >= 0")


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if low <= value <= high else None


def _text(value: Any, limit: int = 120) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def figures(status: Mapping[str, Any], received_ns: int, default_heartbeat_s: float) -> dict:
    """The health figures of one online status, each checked (None when absent or odd)."""
    clock = status.get("clock") if isinstance(status.get("clock"), Mapping) else {}
    wall_ns = status.get("wall_ns")
    offset_ms = None
    if isinstance(wall_ns, int) and not isinstance(wall_ns, bool) and 0 < wall_ns < 2**63:
        offset_ms = round((wall_ns - received_ns) / 1e6)  # terminal ahead: positive
    synced = clock.get("synced")
    maxerror = _number(clock.get("maxerror_us"), -1, 2**62)
    depth = _number(status.get("queue_depth"), 0, 2**62)
    alerts = status.get("alerts")
    heartbeat_s = _number(status.get("heartbeat_s"), *HEARTBEAT_RANGE_S)
    return {
        "heartbeat_s": heartbeat_s or default_heartbeat_s,
        "queue_depth": int(depth) if depth is not None else None,
        "oldest_unsent_age_s": _number(status.get("oldest_unsent_age_s"), 0, 2**40),
        "clock_synced": int(synced) if isinstance(synced, bool) else None,
        "clock_maxerror_us": int(maxerror) if maxerror is not None else None,
        "clock_offset_ms": offset_ms,
        "reader": _text(status.get("reader"), 200),
        "disk_free_mb": _number(status.get("disk_free_mb"), 0, 2**40),
        "version": _text(status.get("version"), 40),
        "alerts": ",".join(a[:40] for a in alerts[:16] if isinstance(a, str))
        if isinstance(alerts, list)
        else "",
    }


class TerminalHealth(OnGatewayDB):
    """Online/offline and figures per terminal on the gateway database. Thread-safe: the
    intake's worker reports statuses and refusals, the gateway's watch thread sweeps."""

    def __init__(
        self,
        db: Path | str | GatewayDB,
        config: HealthConfig | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(db)
        self.config = config or HealthConfig()
        self.clock_ns = clock_ns
        self._lock = threading.Lock()
        self._refusals: Counter[tuple[str, str]] = Counter()
        self._readers: dict[str, str] = {}
        self._started_ns = clock_ns()
        """A gateway that (re)starts has heard no heartbeat yet, however alive the terminals
        are: until one of its intervals plus the margin has passed since the start, the
        sweeper judges no terminal silent (the retained statuses arrive with the subscription,
        the Last Will still says who left)."""

    # ------------------------------------------------------------------ what the intake reports

    def on_status(self, terminal: str, status: Mapping[str, Any]) -> None:
        """Record one decoded status of ``terminal`` (heartbeat or Last Will)."""
        self.on_statuses([(terminal, status)])

    def on_statuses(self, statuses: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Record decoded statuses in order: each run of heartbeats in one write (the
        intake's held heartbeats), a Last Will between them where it came."""
        now = self.clock_ns()
        run: list[tuple[str, int, int, dict]] = []
        for terminal, status in statuses:
            if status.get("state") == "online":
                found = figures(status, now, self.config.heartbeat_s)
                due = now + int((found["heartbeat_s"] + self.config.margin_s) * 1e9)
                run.append((terminal, now, due, found))
                continue
            self._save_online(run)
            run = []
            reason = _text(status.get("reason"), 60) or "offline"
            if self.db.save_terminal_offline(terminal, now, reason):
                log.warning("terminal offline", extra=fields(terminal=terminal, reason=reason))
        self._save_online(run)

    def _save_online(self, run: list[tuple[str, int, int, dict]]) -> None:
        if not run:
            return
        for terminal in self.db.save_terminals_online(run):
            log.info("terminal online", extra=fields(terminal=terminal))
        for terminal, _, _, found in run:
            self._note_reader(terminal, found["reader"])

    def _note_reader(self, terminal: str, reader: str | None) -> None:
        state = reader or "unknown"
        with self._lock:
            before = self._readers.get(terminal, "ok")
            self._readers[terminal] = state
        if state != "ok" and before == "ok":
            # the terminal's reader text is a fixed driver message, never a badge or a name
            log.error("reader fault", extra=fields(terminal=terminal, reader=state))
        elif state == "ok" and before != "ok":
            log.warning("reader recovered", extra=fields(terminal=terminal))

    def on_refusal(self, terminal: str | None, reason: str) -> None:
        """Count one refusal for ``terminal`` (kept in memory, written on the next sweep). A
        refusal for a terminal the gateway does not know is the intake's count only: topics
        naming made-up terminals must not grow a table."""
        if not terminal or reason == "unknown_terminal":
            return
        with self._lock:
            key = (terminal, reason)
            if key in self._refusals or len(self._refusals) < MAX_PENDING_REFUSALS:
                self._refusals[key] += 1

    # ------------------------------------------------------------------ the sweeper

    def sweep(self) -> list[str]:
        """Turn every terminal past its heartbeat deadline offline (logged), and write the
        refusals counted since the last sweep. Returns the terminals turned offline."""
        now = self.clock_ns()
        with self._lock:
            pending, self._refusals = self._refusals, Counter()
        if pending:
            self.db.add_refusals(pending, now)
        margin = self.config.margin_s
        silent = [
            terminal
            for terminal, interval in self.db.silent_terminals(now)
            if now >= self._started_ns + int(((interval or self.config.heartbeat_s) + margin) * 1e9)
        ]
        # One transaction for the sweep, not one synced commit per terminal: a site's power
        # cut silences all its terminals in the same second.
        went = []
        if silent:
            with self.db.atomic():
                went = [t for t in silent if self.db.save_terminal_offline(t, now, SILENT)]
        for terminal in went:
            log.warning(
                "terminal offline: no heartbeat within its interval and margin",
                extra=fields(terminal=terminal, reason=SILENT),
            )
        return silent
