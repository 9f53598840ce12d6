"""Prometheus metrics of the gateway, read from its database at each scrape (docs/metrics.md).

Every figure comes from the gateway database, not from one process's memory, so the console
serving ``/metrics`` may run apart from the intake and the relay, and a restart loses no count
(except the relay latency histogram, which starts afresh as Prometheus histograms do). Labels
are terminal ids, worksite references, reasons, states and alert kinds only: never an INSS,
never a worker reference, never a badge.

``/metrics`` has its own bearer token, a random secret kept in a 0600 file (created on first
use); Prometheus sends it with ``authorization: {credentials_file: ...}``.

Example::

    endpoint = MetricsEndpoint(db, Path("/etc/siteclock/metrics.token"))
    status, body, content_type = endpoint.answer(request.headers.get("Authorization"))
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from siteclock.files import write_secret
from siteclock.gateway.db import GatewayDB

LATENCY_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Relay latency buckets: seconds from the relay taking an event to submitting it."""
RELAYED = ("pending", "registered", "rejected")
"""Registration states of rows the NSSO has an answer about (created, then validated)."""
REJECTED = ("rejected", "refused")


class RelayLatency:
    """A cumulative histogram fed from the registrations submitted since the last scrape."""

    def __init__(self, since_ns: int) -> None:
        self._mark = since_ns
        self._counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def update(self, db: GatewayDB) -> None:
        with self._lock:
            while True:
                rows = db.relay_latencies_since(self._mark)
                for submitted_ns, seconds in rows:
                    slot = next(
                        (i for i, b in enumerate(LATENCY_BUCKETS_S) if seconds <= b),
                        len(LATENCY_BUCKETS_S),
                    )
                    self._counts[slot] += 1
                    self._sum += max(seconds, 0.0)
                    self._mark = max(self._mark, submitted_ns)
                if len(rows) < 10_000:
                    return

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            buckets, running = [], 0
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self._counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
            return HistogramMetricFamily(
                "siteclock_relay_latency_seconds",
                "Seconds from the relay taking an event to submitting it to the NSSO",
                buckets=buckets,
                sum_value=self._sum,
            )


class GatewayCollector(Collector):
    """The metrics, built from the gateway database at each collect."""

    def __init__(self, db: GatewayDB, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.db = db
        self.latency = RelayLatency(clock_ns())

    def collect(self) -> Iterator[Metric]:
        db = self.db
        stored = db.count_events()
        refused = db.refusal_totals()
        yield CounterMetricFamily(
            "siteclock_events_received", "Events the intake judged (stored or refused)",
            value=stored + sum(refused.values()),
        )  # fmt: skip
        yield CounterMetricFamily(
            "siteclock_events_stored", "Events stored in the gateway inbox", value=stored
        )
        by_reason = CounterMetricFamily(
            "siteclock_events_refused", "Events and messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(refused.items()):
            by_reason.add_metric([reason], count)
        yield by_reason
        counts = db.registration_counts()
        states = GaugeMetricFamily(
            "siteclock_registrations", "Registrations by relay state", labels=["state"]
        )
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states
        yield CounterMetricFamily(
            "siteclock_registrations_relayed", "Registrations the NSSO created",
            value=sum(counts.get(s, 0) for s in RELAYED),
        )  # fmt: skip
        yield CounterMetricFamily(
            "siteclock_registrations_rejected", "Registrations rejected or refused by the NSSO",
            value=sum(counts.get(s, 0) for s in REJECTED),
        )  # fmt: skip
        self.latency.update(db)
        yield self.latency.family()
        yield from self._terminals()
        yield from self._alerts()

    def _terminals(self) -> Iterator[Metric]:
        summary = self.db.terminals_summary()
        terminals = GaugeMetricFamily(
            "siteclock_terminals", "Active terminals by state (never: not heard from yet)",
            labels=["state"],
        )  # fmt: skip
        for state, count in summary.items():
            terminals.add_metric([state], count)
        yield terminals
        yield GaugeMetricFamily(
            "siteclock_terminals_online", "Active terminals online", value=summary["online"]
        )
        depth = GaugeMetricFamily(
            "siteclock_terminal_backlog_events", "Unsent events on each terminal (last heartbeat)",
            labels=["terminal", "worksite"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "siteclock_terminal_backlog_oldest_seconds",
            "Age of each terminal's oldest unsent event (last heartbeat)",
            labels=["terminal", "worksite"],
        )
        online = GaugeMetricFamily(
            "siteclock_terminal_online", "1 when the terminal is online", labels=["terminal"]
        )
        for row in self.db.active_terminal_health():
            labels = [row["terminal"], row["workplace"]]
            if row["queue_depth"] is not None:
                depth.add_metric(labels, row["queue_depth"])
            age.add_metric(labels, row["oldest_unsent_age_s"] or 0.0)
            online.add_metric([row["terminal"]], 1 if row["online"] else 0)
        yield from (depth, age, online)

    def _alerts(self) -> Iterator[Metric]:
        counts = self.db.alert_counts()
        open_ = GaugeMetricFamily("siteclock_alerts_open", "Open alerts by kind", labels=["kind"])
        raised = CounterMetricFamily(
            "siteclock_alerts_raised", "Alerts raised by kind", labels=["kind"]
        )
        for kind in sorted({k for k, _ in counts}):
            open_.add_metric([kind], counts.get((kind, True), 0))
            raised.add_metric([kind], counts.get((kind, True), 0) + counts.get((kind, False), 0))
        yield from (open_, raised)


def load_or_create_token(path: Path) -> str:
    """The bearer token in ``path`` (0600), created with 256 random bits when missing; a
    token file others may read is refused with the fix."""
    if not path.exists():
        write_secret(path, (secrets.token_urlsafe(32) + "\n").encode())
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise PermissionError(f"metrics token {path} is mode {mode:04o}: chmod 600 it")
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"metrics token {path} is shorter than 16 characters")
    return token


class MetricsEndpoint:
    """``/metrics`` behind its own bearer token."""

    def __init__(
        self, db: GatewayDB, token_file: Path, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._token = load_or_create_token(token_file).encode()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = GatewayCollector(db, clock_ns=clock_ns)
        self.registry.register(self.collector)

    def authorized(self, authorization: str | None) -> bool:
        scheme, _, given = (authorization or "").partition(" ")
        offered = given.strip().encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(offered, self._token)

    def answer(self, authorization: str | None) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` for a scrape with this Authorization header."""
        if not self.authorized(authorization):
            return 401, b"metrics need the bearer token of the gateway's metrics token file\n", (
                "text/plain; charset=utf-8"
            )
        return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
