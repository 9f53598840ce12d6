"""Relay stage 2: what a failure means. Classifying a POST's failure, the rows' next state
for each kind, and the alerts that name why CIaO does not answer.

The decisions are pure functions (tested alone in tests/unit/test_relay_failures.py);
:class:`Alerts` is the one piece with state: the open alerts, kept in ``relay_alerts``.

A POST is never repeated blindly: anything that may have reached CIaO (timeout after sending,
dropped connection, a 5xx, a garbled 200, a bug after the request left) is *ambiguous* and
searched for first. Nothing that could still succeed is given up: outages, 429s, refused
credentials and refusals of the request itself keep rows queued with a backoff. Only a 400
naming an item ends it (``refused``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from siteclock.gateway.ciao.client import (
    Ambiguous,
    AuthError,
    BadResponse,
    CiaoError,
    Permanent,
    ShuttingDown,
    describe_problem,
)
from siteclock.gateway.relay_mapping import item_problem
from siteclock.gateway.relay_store import RelayStore, State
from siteclock.log import fields, redact

log = logging.getLogger(__name__)

Key = tuple[str, int]
Update = tuple[Key, dict[str, Any]]

# Alert causes (relay_alerts.cause) and how each one reads.
UNREACHABLE = "unreachable"
CREDENTIALS = "credentials"
THROTTLED = "throttled"
REFUSING = "refusing"
UNRECONCILED = "unreconciled"
ALERT_TEXT = {
    UNREACHABLE: "CIaO unreachable since {since}",
    CREDENTIALS: "credentials refused by {where} since {since}",
    THROTTLED: "CIaO rate-limiting us (429) since {since}",
    REFUSING: "CIaO refuses our requests since {since}",
    UNRECONCILED: "search refused by CIaO since {since}: events wait for a person",
}
NOT_ANSWERED = (UNREACHABLE, CREDENTIALS, THROTTLED)
"""The causes an answer from CIaO (any answer, even a refusal of one search) closes."""


def describe(exc: BaseException) -> str:
    """A short, INSS-free description of a failure for the employer's view."""
    reason = getattr(exc, "reason", type(exc).__name__)
    status = getattr(exc, "status", None)
    text = f"{reason}" + (f" (HTTP {status})" if status else "") + f": {exc}"
    return redact(text)[:300]


def since(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------------- classification


class Action(StrEnum):
    """What a failed POST means for its rows."""

    REQUEUE = "requeue"  # not an answer about the items: queued again with a backoff
    AMBIGUOUS = "ambiguous"  # may have reached CIaO: searched for before any resend
    REFUSED = "refused"  # a 400: the items it names end as refused, the others go again
    SHUTDOWN = "shutdown"  # the relay is stopping: queued again, the attempt not counted
    BUG = "bug"  # our own bug after the request may have left: ambiguous, then raised


@dataclass(frozen=True)
class Failure:
    action: Action
    counter: str  # the relay counter to bump (for REQUEUE and SHUTDOWN)


def classify(exc: Exception) -> Failure:
    """The meaning of an exception raised by a registerInBulk call (the client has already
    spent its own retries)."""
    if isinstance(exc, AuthError):
        return Failure(Action.REQUEUE, f"auth.{exc.reason}")
    if isinstance(exc, Ambiguous | BadResponse):
        if isinstance(exc, BadResponse) and not exc.after_send:
            return Failure(Action.REQUEUE, f"bad_response.{exc.kind}")
        return Failure(Action.AMBIGUOUS, "ambiguous")
    if isinstance(exc, Permanent):
        if exc.status != 400:  # about the request (404, 413...), not the items
            return Failure(Action.REQUEUE, f"refused.{exc.reason}")
        return Failure(Action.REFUSED, f"permanent.{exc.reason}")
    if isinstance(exc, ShuttingDown):
        return Failure(Action.SHUTDOWN, "shutdown")
    if isinstance(exc, CiaoError):  # Transient, after the client's own retries
        return Failure(Action.REQUEUE, f"transient.{exc.reason}")
    return Failure(Action.BUG, "ambiguous")


def alert_cause(exc: BaseException) -> tuple[str, str] | None:
    """The alert a failure opens and where it happened; None for a shutdown."""
    if isinstance(exc, ShuttingDown):
        return None
    reason = str(getattr(exc, "reason", ""))
    where = "the token endpoint" if reason.startswith("auth_") else "the API"
    if isinstance(exc, AuthError) or reason == "token_rejected":
        return CREDENTIALS, where
    if reason == "rate_limited":
        return THROTTLED, where
    if isinstance(exc, Permanent):
        return REFUSING, where
    return UNREACHABLE, where


# ---------------------------------------------------------------------- next state of rows


def requeue_updates(
    keys: Sequence[Key],
    attempts: Mapping[Key, int],
    *,
    error: str,
    now_ns: int,
    delay_s: Callable[[int], float],
    retry_after: float | None,
    count_attempt: bool = True,
) -> list[Update]:
    """Back to ``queued`` with a jittered backoff (``delay_s(attempts)``), or the Retry-After
    when longer, however many attempts it took. ``count_attempt`` False gives the attempt back
    (the request never left, or the relay was stopping)."""
    updates = []
    for key in keys:
        tries = attempts[key]
        delay = delay_s(tries)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        values: dict[str, Any] = {
            "state": State.QUEUED,
            "last_error": error,
            "updated_ns": now_ns,
            "next_try_ns": now_ns + int(delay * 1e9),
        }
        if not count_attempt:
            values["attempts"] = max(0, tries - 1)
        updates.append((key, values))
    return updates


def ambiguous_columns(exc: BaseException, now_ns: int, settle_s: float) -> dict[str, Any]:
    """An ambiguous batch waits ``settle_s`` (a slow commit at CIaO lands) before its search."""
    return {
        "state": State.AMBIGUOUS,
        "last_error": describe(exc),
        "next_try_ns": now_ns + int(settle_s * 1e9),
        "ambiguous_ns": now_ns,
        "updated_ns": now_ns,
    }


def refusal_updates(
    keys: Sequence[Key], attempts: Mapping[Key, int], exc: Permanent, now_ns: int
) -> tuple[list[Update], int]:
    """A 400 ends the items it names (``refused``, with their part of the problem); the others
    go again with their attempt given back, or, when it names none in a batch of several,
    each alone (``solo``), so one bad item cannot sink its neighbours. Returns the updates and
    how many items were refused."""
    named = {keys[i]: i for i in exc.item_indexes if i < len(keys)}
    if not named and len(keys) == 1:
        named = {keys[0]: 0}
    updates: list[Update] = []
    for key in keys:
        if key in named:
            problem = item_problem(exc.problem, named[key])
            values: dict[str, Any] = {
                "state": State.REFUSED,
                "last_error": redact(describe_problem(problem))[:500],
                "problem": json.dumps(problem),
                "final_ns": now_ns,
                "updated_ns": now_ns,
            }
        elif named:
            values = {
                "state": State.QUEUED,
                "updated_ns": now_ns,
                "attempts": max(0, attempts[key] - 1),
            }
        else:
            values = {
                "state": State.QUEUED,
                "solo": 1,
                "updated_ns": now_ns,
                "last_error": describe(exc),
            }
        updates.append((key, values))
    return updates, len(named)


# ---------------------------------------------------------------------- alerts by cause


class Alerts:
    """The open alerts by cause: one per cause until CIaO answers again (``relay_alerts``)."""

    def __init__(self, store: RelayStore, counters: Counter[str], clock_ns: Callable[[], int]):
        self._store = store
        self._counters = counters
        self._clock_ns = clock_ns
        self.open = store.open_alerts()

    def __contains__(self, cause: str) -> bool:
        return cause in self.open

    def trouble(self, exc: BaseException, now_ns: int) -> None:
        """Open the alert that names why CIaO did not answer (once, until it recovers)."""
        found = alert_cause(exc)
        if found is not None:
            cause, where = found
            self.raise_(cause, now_ns, describe(exc), where=where)

    def raise_(self, cause: str, now_ns: int, error: str, **words: str) -> None:
        if cause in self.open:
            return
        message = ALERT_TEXT[cause].format(since=since(now_ns), **words) + f" ({error})"
        if self._store.raise_alert(cause, message, now_ns):
            self._counters[f"alert.{cause}"] += 1
            log.error("relay alert", extra=fields(cause=cause, alert=message))
        self.open[cause] = message

    def answered(self, *causes: str) -> None:
        """CIaO answered: close the alerts about not being answered (all four by default)."""
        for cause in causes or (*NOT_ANSWERED, REFUSING):
            if cause not in self.open:
                continue
            message = self.open.pop(cause)
            self._store.clear_alert(cause, self._clock_ns())
            log.warning("relay alert cleared", extra=fields(cause=cause, was=message))
