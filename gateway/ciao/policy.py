"""Named retry policies for talking to CIaO, composed from small tenacity parts.

Every policy says when to stop, what to retry and how long to wait; none relies on tenacity's
defaults (retry forever, on any exception). The parts:

* wait: the server's ``Retry-After`` when the failure carries one (a 429 or 503), otherwise
  exponential backoff with jitter;
* stop: max attempts | max total delay | the shutdown event is set;
* retry: transient failures only. For a POST that means "the server certainly did not process
  it" (429, 503, 401 with a stale token, connection refused); for a GET any failure that is not
  permanent, since reading twice is harmless;
* before_sleep: counts retries and logs the attempt number and delay, never a payload.

Sleeping is injectable (tests record sleeps instead of sleeping); with a shutdown event the
sleep is ``event.wait`` so a SIGTERM cuts a backoff short.

Exceptions are recognised by duck typing: ``exc.transient`` (bool), ``exc.retry_after``
(seconds or None), ``exc.permanent`` (bool). :mod:`gateway.ciao.client` defines them.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
    wait_random_exponential,
)
from tenacity.nap import sleep_using_event
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from siteclock.log import fields

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 300.0
"""Longest Retry-After we obey; a bigger value is clamped (a broken server must not park us)."""


def retry_after_seconds(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP-date. None when absent/garbled."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now()), RETRY_AFTER_CAP_S)


class wait_retry_after_or(wait_base):
    """Wait what the failure's ``retry_after`` says, else what ``fallback`` says."""

    def __init__(self, fallback: wait_base, cap: float = RETRY_AFTER_CAP_S) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.cap)
        return float(self.fallback(retry_state))


class stop_when_set(stop_base):
    """Stop retrying once ``event`` is set (shutdown)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def is_transient(exc: BaseException) -> bool:
    """Safe to send again as is: the server did not act on the request."""
    return getattr(exc, "transient", False) is True


def is_retryable_read(exc: BaseException) -> bool:
    """For idempotent reads: anything but a permanent refusal, refused credentials (asking
    again will not change the answer) or a programming error."""
    return (
        hasattr(exc, "permanent")
        and not getattr(exc, "permanent", True)
        and not getattr(exc, "auth", False)
    )


class RetryStats:
    """Thread-safe counters the before_sleep hook feeds (retries per operation, seconds slept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries: Counter[str] = Counter()
        self.slept_s = 0.0

    def note(self, operation: str, delay: float) -> None:
        with self._lock:
            self.retries[operation] += 1
            self.slept_s += delay


def before_sleep_count_and_log(
    stats: RetryStats, operation: str, logger: logging.Logger = log
) -> Callable[[RetryCallState], None]:
    """A before_sleep hook: count, then log operation, attempt, delay and error class only."""

    def hook(retry_state: RetryCallState) -> None:
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        stats.note(operation, delay)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        logger.warning(
            "ciao call failed, retrying",
            extra=fields(
                operation=operation,
                attempt=retry_state.attempt_number,
                delay_s=round(delay, 3),
                error=type(exc).__name__ if exc else "none",
                reason=getattr(exc, "reason", ""),
            ),
        )

    return hook


@dataclass(frozen=True)
class PolicyConfig:
    """Knobs of the retry policies (seconds). Defaults fit production; tests shrink them."""

    max_attempts: int = 8  # tries of one call before it goes back to the caller
    max_delay_s: float = 600.0  # total time one call may spend retrying
    initial_wait_s: float = 1.0  # first wait of the exponential backoff
    max_wait_s: float = 60.0  # longest single wait
    jitter_s: float = 1.0  # random spread added to each wait
    # A Retry-After longer than this is not waited inside the call: the failure goes back to
    # the caller (the relay), which keeps its rows queued, raises its alert at once and stays
    # free for verdicts meanwhile. The client still sends nothing before that instant.
    max_inline_retry_after_s: float = 5.0


def backoff(config: PolicyConfig) -> wait_base:
    return wait_exponential_jitter(
        multiplier=config.initial_wait_s, max=config.max_wait_s, jitter=config.jitter_s
    )


def requeue_wait(config: PolicyConfig) -> wait_base:
    """How long a requeued row waits: "full jitter" exponential backoff, capped at
    ``max_wait_s``, so a backlog that failed together does not come back together."""
    return wait_random_exponential(multiplier=config.initial_wait_s, max=config.max_wait_s)


def delay_for_attempt(wait: wait_base, attempt: int) -> float:
    """Ask a tenacity wait strategy for the delay after ``attempt`` failures, outside a
    Retrying loop (the relay keeps its attempt counts in the database, not on a stack)."""
    state = RetryCallState(None, None, (), {})
    state.attempt_number = max(1, attempt)
    return float(wait(state))


def make_retrying(
    config: PolicyConfig,
    *,
    operation: str,
    predicate: Callable[[BaseException], bool] = is_transient,
    shutdown: threading.Event | None = None,
    sleep: Callable[[float], None] | None = None,
    stats: RetryStats | None = None,
) -> Retrying:
    """The one way this package builds a retry loop. ``reraise=True``: callers see our errors."""
    stop = stop_after_attempt(config.max_attempts) | stop_after_delay(config.max_delay_s)
    if shutdown is not None:
        stop = stop | stop_when_set(shutdown)
        if sleep is None:
            sleep = sleep_using_event(shutdown)
    def worth_waiting(exc: BaseException) -> bool:
        retry_after = getattr(exc, "retry_after", None)
        too_long = retry_after is not None and retry_after > config.max_inline_retry_after_s
        return predicate(exc) and not too_long

    return Retrying(
        retry=retry_if_exception(worth_waiting),
        wait=wait_retry_after_or(backoff(config)),
        stop=stop,
        sleep=sleep or time.sleep,
        before_sleep=before_sleep_count_and_log(stats or RetryStats(), operation),
        reraise=True,
    )


def submit_policy(config: PolicyConfig, **kwargs: object) -> Retrying:
    """For registerInBulk (a POST): retry only what certainly was not processed."""
    return make_retrying(config, operation="register", predicate=is_transient, **kwargs)  # type: ignore[arg-type]


def read_policy(config: PolicyConfig, *, operation: str, **kwargs: object) -> Retrying:
    """For token, lookup and search: reading again is harmless, so retry all non-permanent."""
    return make_retrying(config, operation=operation, predicate=is_retryable_read, **kwargs)  # type: ignore[arg-type]
