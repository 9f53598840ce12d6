"""Sending alerts out through Apprise: e-mail, Teams, Slack, a webhook..., configured by URL.

Each alert is news twice: when it is raised and when it is resolved. :class:`AlertDelivery`
sends what is pending, oldest first, and records it as sent only when Apprise says every URL
took it; a failure is kept, with its error, and tried again after a backoff (``retry_s``,
doubling, at most an hour), so an outage of the mail server loses no alert. A storm (more new
alerts of one kind in a round than ``storm``: a site losing its network takes every terminal
offline at once) goes out as one summary message with a link to the console's list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import apprise

from siteclock.gateway.alerts.config import AlertConfig, UrlsFileError
from siteclock.gateway.db import GatewayDB
from siteclock.log import fields, redact

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 3600.0


class Channel(Protocol):
    def send(self, title: str, body: str, *, resolved: bool) -> bool: ...


class AppriseChannel:
    """The Apprise URLs of the config, read on each send (so a fixed file counts at once)."""

    def __init__(self, urls: Callable[[], Sequence[str]], *, timeout_s: float = 10.0) -> None:
        self._urls = urls
        self.timeout_s = timeout_s
        self.last_error = ""

    def configured(self) -> bool:
        try:
            return bool(self._urls())
        except UrlsFileError as exc:
            self.last_error = str(exc)
            return False

    def send(self, title: str, body: str, *, resolved: bool) -> bool:
        try:
            urls = list(self._urls())
        except UrlsFileError as exc:
            self.last_error = str(exc)
            return False
        notifier = apprise.Apprise()
        if not notifier.add(urls):
            self.last_error = "no valid Apprise URL in alerts.urls_file; see docs/alerts.md"
            return False
        kind = apprise.NotifyType.SUCCESS if resolved else apprise.NotifyType.WARNING
        ok = bool(notifier.notify(body=body, title=title, notify_type=kind, timeout=self.timeout_s))
        self.last_error = "" if ok else "an Apprise URL refused or did not answer (see its log)"
        return ok


def _news(row: Any) -> tuple[str, str, bool]:
    """Title and body of an alert's pending news, and whether it is the resolution."""
    if row["sent_ns"] is not None and row["resolved_ns"] is not None:
        by = f" by {row['resolved_by']}" if row["resolved_by"] else ""
        body = f"{row['message']}\nResolved{by}: {row['resolution']}\n{row['link']}"
        return f"Resolved: {row['kind'].replace('_', ' ')}", body, True
    title = f"siteclock alert: {row['kind'].replace('_', ' ')} ({row['subject']})"
    return title, f"{row['message']}\n{row['link']}", False


class AlertDelivery:
    """Sends pending alert news on a channel (see the module)."""

    def __init__(
        self,
        db: GatewayDB,
        channel: Channel,
        config: AlertConfig,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.db = db
        self.channel = channel
        self.config = config
        self.clock_ns = clock_ns
        self.sent = 0
        self.failed = 0

    def deliver(self) -> int:
        """Send what is due; returns how many alerts' news went out."""
        now = self.clock_ns()
        rows = self.db.alerts_to_send(now)
        groups: dict[tuple[str, bool], list[Any]] = {}
        for row in rows:
            groups.setdefault((row["kind"], _news(row)[2]), []).append(row)
        done = 0
        for (kind, resolved), group in groups.items():
            if len(group) > self.config.storm:
                messages = [self._summary(kind, resolved, group)]
            else:
                messages = [(_news(r), [r["id"]]) for r in group]
            for (title, body, is_resolution), ids in messages:
                done += self._send(title, body, is_resolution, ids, group, now)
        return done

    def _summary(self, kind: str, resolved: bool, group: list[Any]) -> tuple[Any, list[int]]:
        subjects = sorted({r["subject"] for r in group})
        shown = ", ".join(subjects[:10]) + (" ..." if len(subjects) > 10 else "")
        what = kind.replace("_", " ")
        link = self.config.console_url.rstrip("/") + "/alerts"
        title = f"siteclock: {len(group)} {what} alerts {'resolved' if resolved else 'raised'}"
        body = f"{len(group)} alerts ({what}) about {shown}.\n{link}"
        return (title, body, resolved), [r["id"] for r in group]

    def _send(
        self, title: str, body: str, resolved: bool, ids: list[int], group: list[Any], now: int
    ) -> int:
        if self.channel.send(redact(title), redact(body), resolved=resolved):
            self.db.mark_alerts_sent(ids, self.clock_ns())
            self.sent += len(ids)
            return len(ids)
        attempts = max(r["send_attempts"] for r in group if r["id"] in ids)
        backoff = min(self.config.retry_s * 2**attempts, MAX_BACKOFF_S)
        error = getattr(self.channel, "last_error", "") or "not sent"
        self.db.alerts_send_failed(ids, error, now + int(backoff * 1e9))
        self.failed += len(ids)
        log.warning(
            "alert not sent; kept, tried again later",
            extra=fields(alerts=len(ids), error=error, retry_s=backoff),
        )
        return 0
