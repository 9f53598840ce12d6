"""Relay stage 5: notification. Each final verdict goes to ``on_verdict(terminal, Verdict)``
(the gateway publishes it on the terminal's ack topic, :mod:`gateway.verdicts`), and an event
still without a verdict after ``verdict_timeout_s`` raises an alert, once.

:func:`verdict_for` is pure (tests/unit/test_relay_notify.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from siteclock.gateway.relay_queries import overdue_without_verdict, unnotified_verdicts
from siteclock.gateway.relay_store import State
from siteclock.log import fields, redact
from siteclock.protocol import Outcome, Verdict

if TYPE_CHECKING:
    from siteclock.gateway.relay import Relay

log = logging.getLogger(__name__)

ALERT_SAMPLE = 20  # a storm of alerts is one problem: log a sample
VERDICT_REASON_MAX = 200


def verdict_for(row: Any) -> Verdict:
    """The verdict a terminal is told for a final row; the reason never holds an INSS."""
    if row["state"] == State.REGISTERED:
        return Verdict(row["seq"], Outcome.REGISTERED, "")
    remarks = json.loads(row["remarks"] or "[]")
    if row["state"] == State.REFUSED:
        reason = f"refused by CIaO: {row['last_error']}"
    else:
        reason = "; ".join(remarks) or row["last_error"] or "rejected"
    return Verdict(row["seq"], Outcome.REJECTED, redact(reason)[:VERDICT_REASON_MAX])


class Notifier:
    """Hands final verdicts to their terminals and alerts on events without one in time."""

    def __init__(self, relay: Relay, on_verdict: Callable[[str, Verdict], None]) -> None:
        self.relay = relay
        self.on_verdict = on_verdict
        self._last_alert_ns = 0

    def notify(self) -> int:
        relay = self.relay
        done = []
        for row in unnotified_verdicts(relay.store):
            verdict = verdict_for(row)
            try:
                self.on_verdict(row["terminal"], verdict)
            except Exception:  # e.g. MQTT down: keep it, send it next turn
                relay.counters["verdict_send_failed"] += 1
                log.exception("verdict not delivered", extra=fields(terminal=row["terminal"]))
                break
            done.append((row["terminal"], row["seq"]))
            relay.counters[f"verdict.{verdict.outcome}"] += 1
            if verdict.outcome is Outcome.REJECTED:  # the employer must act: always logged
                log.warning(
                    "NSSO rejected a registration",
                    extra=fields(terminal=row["terminal"], seq=row["seq"], reason=verdict.reason),
                )
        if done:
            with relay.tx() as db:
                relay.store.update(db, done, notified=1)
        return len(done)

    def alert_overdue(self) -> None:
        relay = self.relay
        now = relay.clock_ns()
        if now - self._last_alert_ns < 1e9:  # a full scan: once a second is plenty
            return
        self._last_alert_ns = now
        cutoff = now - int(relay.config.verdict_timeout_s * 1e9)
        rows = overdue_without_verdict(relay.store, cutoff)
        if not rows:
            return
        relay.counters["alert.no_verdict"] += len(rows)
        for row in rows[:ALERT_SAMPLE]:
            log.warning(
                "no CIaO verdict in time",
                extra=fields(
                    terminal=row["terminal"],
                    seq=row["seq"],
                    state=row["state"],
                    error=row["last_error"],
                ),
            )
        with relay.tx() as db:
            relay.store.update(db, [(r["terminal"], r["seq"]) for r in rows], alerted=1)
