"""The alert rules: what raises an alert, what resolves it.

Every alert has a key naming what it is about (``terminal_offline:t-hall-01``,
``nsso_rejected:t-hall-01:42``); the database keeps one open alert per key, so a condition that
lasts is one alert, however many rounds see it. A condition about a thing's *state* (a
terminal offline, a reader fault, CIaO refusing our credentials) resolves itself when the
state clears, with the time in the resolution, and may be raised again later. A condition
about one *event* (an NSSO rejection, a sequence issue, a security alert) is raised once ever:
a person resolves it, from the console, and their resolution is recorded with their name.

The rules read through the gateway database only; each round costs a read of the active
terminals' health rows, the open alerts, and whatever changed since the last round (the
rejections and sequence issues are read from a watermark through partial indexes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.db import GatewayDB
from siteclock.gateway.relay_failures import CREDENTIALS
from siteclock.log import redact

TERMINAL_OFFLINE = "terminal_offline"
BACKLOG = "backlog"
CLOCK_UNSYNCED = "clock_unsynced"
READER_FAULT = "reader_fault"
DISK_LOW = "disk_low"
NSSO_REJECTED = "nsso_rejected"
NSSO_REMARK = "nsso_remark"
SEQUENCE = "sequence"
NSSO_AUTH = "nsso_auth"
RELAY = "relay"
SECURITY = "security"
RELAY_BACKLOG = "relay_backlog"
KINDS = (
    TERMINAL_OFFLINE, BACKLOG, RELAY_BACKLOG, CLOCK_UNSYNCED, READER_FAULT, DISK_LOW,
    NSSO_REJECTED, NSSO_REMARK, SEQUENCE, NSSO_AUTH, RELAY, SECURITY,
)  # fmt: skip
WAITING = (
    "queued", "unknown_badge", "blocked_badge", "unknown_workplace", "awaiting_clock_sync",
    "awaiting_earlier", "submitted", "ambiguous", "needs_review",
)  # fmt: skip
"""Registration states of events stored at the gateway and not yet created at the NSSO."""
TERMINAL_KINDS = (TERMINAL_OFFLINE, BACKLOG, CLOCK_UNSYNCED, READER_FAULT, DISK_LOW)
"""Kinds about a terminal's state: their key is ``kind:terminal``, their subject the terminal."""
STATE_KINDS = (*TERMINAL_KINDS, RELAY_BACKLOG, NSSO_AUTH, RELAY)
"""Kinds that resolve themselves when their condition clears. One a person resolved while
the condition still held raises nothing new until the condition has cleared once (the person
knows; a new alert every round would only be noise)."""
EVENT_KINDS = (NSSO_REJECTED, NSSO_REMARK, SEQUENCE, SECURITY)
"""Kinds raised once ever; a person resolves them."""
FINAL_REFUSALS = ("rejected", "refused")
BATCH = 1000


SITE_TZ = ZoneInfo("Europe/Brussels")
"""Alert texts give times as the worksite reads its clocks (as the console shows them), with
the zone's name, since they travel by e-mail and chat."""


def at(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).astimezone(SITE_TZ).strftime(
        "%Y-%m-%d %H:%M:%S %Z"
    )


@dataclass
class Round:
    """What one evaluation changed: the keys raised and resolved."""

    raised: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    holding: set[str] = field(default_factory=set)
    """Keys of the state conditions that hold this round (raised or not)."""


def _terminal_conditions(row: Any, cfg: AlertConfig) -> dict[str, str]:
    """``{kind: message}`` of every condition that holds for one active terminal's health row
    (a terminal never heard from has none: it has not been installed yet)."""
    if row["online"] is None:
        return {}
    found: dict[str, str] = {}
    name = f"Terminal {row['terminal']} (worksite {row['workplace']})"
    if not row["online"]:
        found[TERMINAL_OFFLINE] = (
            f"{name} is offline since {at(row['changed_ns'])} ({row['reason'] or 'offline'}); "
            "check its power and network, or decommission it if it was removed"
        )
    age = row["oldest_unsent_age_s"]
    if age is not None and age > cfg.backlog_age_s:
        found[BACKLOG] = (
            f"{name} holds {row['queue_depth'] or 0} unsent events, the oldest {age / 60:.0f} min "
            "old: registrations are due in real time; check its connection to the gateway"
        )
    if row["clock_synced"] == 0:
        found[CLOCK_UNSYNCED] = (
            f"{name} has an unsynchronised clock (max error {row['clock_maxerror_us']} us): its "
            "taps are flagged; check NTP access from the site"
        )
    reader = row["reader"]
    if reader is not None and reader != "ok":
        found[READER_FAULT] = f"{name} reader fault: {redact(reader)}"
    codes = set((row["alerts"] or "").split(","))
    free = row["disk_free_mb"]
    if (free is not None and free < cfg.disk_low_mb) or codes & {"disk_low", "disk_full"}:
        full = "is refusing taps (disk full)" if "disk_full" in codes else "is low on disk"
        found[DISK_LOW] = f"{name} {full}: {free} MB free; free space or replace its card"
    return found


class AlertRules:
    """Raises and resolves the alerts from what the gateway database holds (see the module)."""

    def __init__(
        self, db: GatewayDB, config: AlertConfig, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.db = db
        self.config = config
        self.clock_ns = clock_ns
        self._muted: set[str] = set()

    def link(self, path: str) -> str:
        return self.config.console_url.rstrip("/") + path

    def evaluate(self) -> Round:
        now = self.clock_ns()
        done = Round()
        opened = self.db.open_alert_keys()
        self._muted = self.db.muted_alert_keys(STATE_KINDS)
        self._terminals(now, opened, done)
        self._relay(now, opened, done)
        self._relay_backlog(now, opened, done)
        self._security(now, opened, done)
        self._verdicts(now, opened, done)
        self._sequence(now, done)
        for key in self._muted - done.holding:
            self.db.unmute_alert(key, now)
        return done

    def _raise(self, done: Round, key: str, kind: str, subject: str, message: str, link: str,
               now: int, *, once_ever: bool = False) -> None:  # fmt: skip
        if not once_ever:
            done.holding.add(key)
            if key in self._muted:
                return
        if self.db.raise_alert(key, kind, subject, message, self.link(link), now,
                               once_ever=once_ever):  # fmt: skip
            done.raised.append(key)

    def _resolve(self, done: Round, key: str, resolution: str, now: int) -> None:
        if self.db.resolve_alert(key, resolution, now):
            done.resolved.append(key)

    # ------------------------------------------------------------------ terminals

    def _terminals(self, now: int, opened: set[str], done: Round) -> None:
        holding: set[str] = set()
        # Only the rows with something to show: a healthy fleet costs next to nothing.
        cfg = self.config
        for row in self.db.terminals_needing_attention(cfg.backlog_age_s, cfg.disk_low_mb):
            terminal = row["terminal"]
            for kind, message in _terminal_conditions(row, self.config).items():
                key = f"{kind}:{terminal}"
                holding.add(key)
                done.holding.add(key)
                if key not in opened:
                    self._raise(done, key, kind, terminal, message, f"/terminals/{terminal}", now)
        for key in opened:
            kind, _, terminal = key.partition(":")
            if kind in TERMINAL_KINDS and key not in holding:
                self._resolve(done, key, self._cleared(kind, terminal, now), now)

    def _cleared(self, kind: str, terminal: str, now: int) -> str:
        row = self.db.terminal_health(terminal)
        if row is None or not self._active(terminal):
            return f"terminal {terminal} left the list (decommissioned) at {at(now)}"
        if kind == TERMINAL_OFFLINE:
            return f"back online at {at(row['changed_ns'])}"
        return f"cleared at {at(now)}"

    def _active(self, terminal: str) -> bool:
        found = self.db.terminal(terminal)
        return found is not None and found[1] == "active"

    # ------------------------------------------------------------------ the relay

    def _relay(self, now: int, opened: set[str], done: Round) -> None:
        for row in self.db.relay_alert_rows():
            cause = row["cause"]
            kind = NSSO_AUTH if cause == CREDENTIALS else RELAY
            key = f"{kind}:{cause}"
            if row["cleared_ns"] is None:
                done.holding.add(key)
                if key not in opened:
                    self._raise(done, key, kind, "nsso", redact(row["message"]), "/alerts", now)
            elif key in opened:
                self._resolve(done, key, f"the NSSO answered again at {at(row['cleared_ns'])}", now)

    def _relay_backlog(self, now: int, opened: set[str], done: Round) -> None:
        """Events stored at the gateway and not yet registered with the NSSO, the oldest
        older than ``backlog_age_s``: one alert, naming how many wait in which state."""
        key = f"{RELAY_BACKLOG}:gateway"
        waiting = self.db.waiting_registrations(WAITING)
        limit = now - int(self.config.backlog_age_s * 1e9)
        late = {s: v for s, v in waiting.items() if v[1] < limit}
        if late:
            done.holding.add(key)
            if key in opened:
                return
            oldest_state, (_, oldest) = min(late.items(), key=lambda item: item[1][1])
            total = sum(n for n, _ in waiting.values())
            states = ", ".join(
                f"{state.replace('_', ' ')}: {n}" for state, (n, _) in sorted(waiting.items())
            )
            message = (
                f"{total} registrations wait at the gateway, the oldest since {at(oldest)} "
                f"({states}): registration is due in real time; see why on the registrations page"
            )
            self._raise(done, key, RELAY_BACKLOG, "nsso", message,
                        f"/registrations?state={oldest_state}", now)  # fmt: skip
        elif key in opened:
            self._resolve(done, key, f"no registration waits longer than the threshold at "
                          f"{at(now)}", now)  # fmt: skip

    # ------------------------------------------------------------------ security

    def _security(self, now: int, opened: set[str], done: Round) -> None:
        still = set()
        for row in self.db.open_security_alerts(limit=100_000):
            key = f"{SECURITY}:{row['id']}"
            still.add(key)
            if key in opened:
                continue
            message = (
                f"Security alert on terminal {row['terminal']}: {row['kind']}"
                + (f" ({redact(row['detail'])})" if row["detail"] else "")
                + (f", seq {row['seq']}" if row["seq"] else "")
            )
            self._raise(done, key, SECURITY, row["terminal"], message,
                        f"/terminals/{row['terminal']}", now, once_ever=True)  # fmt: skip
        for key in opened:
            if key.startswith(f"{SECURITY}:") and key not in still:
                self._resolve(done, key, f"security alert marked resolved at {at(now)}", now)

    # ------------------------------------------------------------------ NSSO verdicts

    def _verdicts(self, now: int, opened: set[str], done: Round) -> None:
        mark = self.db.alert_mark("verdicts")
        rows = self.db.verdict_issues_since(mark, BATCH)
        for row in rows:
            place = f"/registrations?terminal={row['terminal']}&seq={row['seq']}"
            what = f"registration {row['terminal']}/{row['seq']} (worksite {row['workplace']})"
            remarks = "; ".join(json.loads(row["remarks"] or "[]"))
            if row["state"] in FINAL_REFUSALS:
                why = redact(remarks or row["last_error"] or row["state"])[:300]
                key = f"{NSSO_REJECTED}:{row['terminal']}:{row['seq']}"
                message = f"The NSSO {row['state']} {what}: {why}; fix the cause and requeue it"
                self._raise(done, key, NSSO_REJECTED, row["terminal"], message, place, now,
                            once_ever=True)  # fmt: skip
            elif remarks:
                key = f"{NSSO_REMARK}:{row['terminal']}:{row['seq']}"
                message = f"The NSSO made remarks on {what}: {redact(remarks)[:300]}"
                self._raise(done, key, NSSO_REMARK, row["terminal"], message, place, now,
                            once_ever=True)  # fmt: skip
        if rows:
            self.db.save_alert_mark("verdicts", max(r["updated_ns"] for r in rows))
        self._requeued(now, opened, done)

    def _requeued(self, now: int, opened: set[str], done: Round) -> None:
        """A rejection alert resolves itself when its registration was requeued."""
        keys = {}
        for key in opened:
            kind, _, rest = key.partition(":")
            if kind == NSSO_REJECTED:
                terminal, _, seq = rest.rpartition(":")
                keys[(terminal, int(seq))] = key
        for found, row in self.db.registration_states(keys).items():
            if row["state"] not in FINAL_REFUSALS:
                self._resolve(done, keys[found], f"requeued; now {row['state']} ({at(now)})", now)

    # ------------------------------------------------------------------ sequence issues

    def _sequence(self, now: int, done: Round) -> None:
        mark = self.db.alert_mark("sequence")
        rows = self.db.sequence_issues_since(mark, BATCH)
        for row in rows:
            key = f"{SEQUENCE}:{row['terminal']}:{row['seq']}"
            issues = row["issues"].replace(",", ", ").replace("_", " ")
            message = (
                f"A worker's taps need a person at worksite {row['workplace']}: {issues} "
                f"(terminal {row['terminal']}, seq {row['seq']}, sent as {row['ciao_type']})"
            )
            place = f"/registrations?terminal={row['terminal']}&seq={row['seq']}"
            self._raise(done, key, SEQUENCE, row["terminal"], message, place, now,
                        once_ever=True)  # fmt: skip
        if rows:
            self.db.save_alert_mark("sequence", max(r["decided_ns"] for r in rows))


def resolve_by_person(
    db: GatewayDB, alert_id: int, resolution: str, by: str, *, now_ns: int | None = None
) -> bool:
    """A person resolves an alert from the console, with their words and name; a security
    alert's own row gets the resolved marker too. True when it was open."""
    now = now_ns if now_ns is not None else time.time_ns()
    row = db.alert(alert_id)
    if row is None or row["resolved_ns"] is not None:
        return False
    with db.atomic():
        if row["kind"] == SECURITY:
            db.resolve_security_alert(int(row["key"].split(":")[1]), resolution, by, now)
        return db.resolve_alert(None, resolution, now, by=by, alert_id=alert_id)

