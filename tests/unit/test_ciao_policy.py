"""The named retry policies: Retry-After first, jittered backoff otherwise, transient-only."""

from __future__ import annotations

import logging
import threading
import time
from email.utils import formatdate

import pytest

from siteclock.gateway.ciao.client import Ambiguous, Permanent, Transient
from siteclock.gateway.ciao.policy import (
    RETRY_AFTER_CAP_S,
    PolicyConfig,
    RetryStats,
    make_retrying,
    read_policy,
    retry_after_seconds,
    submit_policy,
)

CFG = PolicyConfig(max_attempts=5, max_delay_s=100, initial_wait_s=1, max_wait_s=8, jitter_s=0.5)


class Flaky:
    """Fails with the given exceptions in order, then returns 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def run(retrying, fn):  # type: ignore[no-untyped-def]
    return retrying(fn)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("99999") == RETRY_AFTER_CAP_S
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(later) <= 30  # type: ignore[operator]


def test_wait_is_retry_after_when_given_else_jittered_exponential() -> None:
    sleeps: list[float] = []
    fn = Flaky(
        Transient("429", retry_after=3.0),
        Transient("503"),
        Transient("503"),
        Transient("429", retry_after=2.0),
    )
    result = run(submit_policy(CFG, sleep=sleeps.append), fn)
    assert result == "ok"
    assert fn.calls == 5
    assert sleeps[0] == 3.0
    assert sleeps[3] == 2.0
    # attempt 2 and 3 without Retry-After: initial * 2**n plus up to jitter.
    assert 2.0 <= sleeps[1] <= 2.5
    assert 4.0 <= sleeps[2] <= 4.5


def test_submit_policy_never_retries_ambiguous_or_permanent() -> None:
    for exc in (Ambiguous("timeout"), Permanent("bad", reason="badRequest", status=400)):
        sleeps: list[float] = []
        fn = Flaky(exc)
        with pytest.raises(type(exc)):
            run(submit_policy(CFG, sleep=sleeps.append), fn)
        assert fn.calls == 1
        assert sleeps == []


def test_read_policy_retries_ambiguous_but_not_permanent() -> None:
    sleeps: list[float] = []
    fn = Flaky(Ambiguous("dropped"))
    assert run(read_policy(CFG, operation="lookup", sleep=sleeps.append), fn) == "ok"
    assert fn.calls == 2
    fn = Flaky(Permanent("gone", reason="resourceNotFound", status=404))
    with pytest.raises(Permanent):
        run(read_policy(CFG, operation="lookup", sleep=sleeps.append), fn)


def test_programming_errors_are_not_retried() -> None:
    fn = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        run(read_policy(CFG, operation="lookup", sleep=lambda s: None), fn)
    assert fn.calls == 1


def test_stops_after_max_attempts_and_reraises_ours() -> None:
    fn = Flaky(*[Transient("503") for _ in range(10)])
    with pytest.raises(Transient):
        run(submit_policy(CFG, sleep=lambda s: None), fn)
    assert fn.calls == CFG.max_attempts


def test_shutdown_event_stops_retrying() -> None:
    stop = threading.Event()
    calls = []

    def fn() -> str:
        calls.append(1)
        stop.set()
        raise Transient("503")

    with pytest.raises(Transient):
        run(make_retrying(CFG, operation="x", shutdown=stop, sleep=lambda s: None), fn)
    assert len(calls) == 1


def test_before_sleep_counts_and_logs_without_payload(caplog: pytest.LogCaptureFixture) -> None:
    stats = RetryStats()
    secret = "90010100123"
    fn = Flaky(Transient(f"body had {secret}", retry_after=0.0))
    with caplog.at_level(logging.WARNING, logger="siteclock.gateway.ciao.policy"):
        run(make_retrying(CFG, operation="register", stats=stats, sleep=lambda s: None), fn)
    assert stats.retries["register"] == 1
    [record] = caplog.records
    assert record.fields["attempt"] == 1
    assert record.fields["operation"] == "register"
    assert secret not in caplog.text
    assert secret not in str(record.fields)


def test_requeue_backoff_is_jittered_and_capped() -> None:
    from siteclock.gateway.ciao.policy import delay_for_attempt, requeue_wait

    wait = requeue_wait(PolicyConfig(initial_wait_s=1.0, max_wait_s=300.0))
    late = [delay_for_attempt(wait, 30) for _ in range(50)]
    assert all(0 <= d <= 300.0 for d in late)
    assert len({round(d, 6) for d in late}) > 40  # spread out, not all at the cap
    early = [delay_for_attempt(wait, 1) for _ in range(50)]
    assert max(early) <= 2.0


def test_a_long_retry_after_goes_back_to_the_caller_instead_of_blocking_it() -> None:
    sleeps: list[float] = []
    policy = submit_policy(CFG, sleep=sleeps.append)
    fn = Flaky(Transient("503", retry_after=CFG.max_inline_retry_after_s + 1))
    with pytest.raises(Transient):
        policy(fn)
    assert fn.calls == 1
    assert sleeps == []
