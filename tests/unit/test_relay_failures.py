"""Relay stage 2 alone: what each kind of failure of a registerInBulk call means for its rows,
and which alert it opens."""

from __future__ import annotations

import json

import pytest

from siteclock.gateway.ciao.client import (
    Ambiguous,
    AuthError,
    BadResponse,
    Permanent,
    ShuttingDown,
    Transient,
)
from siteclock.gateway.identifiers import inss_check_digits
from siteclock.gateway.relay_failures import (
    CREDENTIALS,
    REFUSING,
    THROTTLED,
    UNREACHABLE,
    Action,
    Failure,
    alert_cause,
    ambiguous_columns,
    classify,
    describe,
    refusal_updates,
    requeue_updates,
)
from siteclock.gateway.relay_store import State

S = 1_000_000_000
INSS = "850101001" + inss_check_digits("850101001")
A, B, C = ("t-1", 1), ("t-1", 2), ("t-2", 7)


def refusal(status: int = 400, names: tuple[str, ...] = ()) -> Permanent:
    issues = [{"in": "body", "name": n, "detail": "wrong"} for n in names]
    return Permanent("refused", reason=f"http_{status}", status=status, issues=issues)


REQUEUE, AMBIGUOUS = Action.REQUEUE, Action.AMBIGUOUS
AFTER_SEND = BadResponse("garbled 200", kind="not_json", after_send=True, status=200)
BEFORE_SEND = BadResponse("garbled 401", kind="not_json", after_send=False, status=401)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (AuthError("no", reason="auth_bad"), Failure(REQUEUE, "auth.auth_bad")),
        (Transient("down", reason="connect"), Failure(REQUEUE, "transient.connect")),
        (Transient("429", reason="rate_limited"), Failure(REQUEUE, "transient.rate_limited")),
        (Ambiguous("timeout after send", reason="read_timeout"), Failure(AMBIGUOUS, "ambiguous")),
        (AFTER_SEND, Failure(AMBIGUOUS, "ambiguous")),
        (BEFORE_SEND, Failure(REQUEUE, "bad_response.not_json")),
        (refusal(400), Failure(Action.REFUSED, "permanent.http_400")),
        (refusal(404), Failure(REQUEUE, "refused.http_404")),
        (refusal(413), Failure(REQUEUE, "refused.http_413")),
        (ShuttingDown("stopping"), Failure(Action.SHUTDOWN, "shutdown")),
        (KeyError("our bug"), Failure(Action.BUG, "ambiguous")),
    ],
)
def test_each_failure_kind_is_classified(exc: Exception, expected: Failure) -> None:
    assert classify(exc) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (AuthError("no", reason="auth_invalid_client"), (CREDENTIALS, "the token endpoint")),
        (Transient("403", reason="token_rejected"), (CREDENTIALS, "the API")),
        (Transient("429", reason="rate_limited"), (THROTTLED, "the API")),
        (refusal(404), (REFUSING, "the API")),
        (Transient("down", reason="connect"), (UNREACHABLE, "the API")),
        (Ambiguous("timeout", reason="read_timeout"), (UNREACHABLE, "the API")),
        (ShuttingDown("stopping"), None),
    ],
)
def test_each_failure_opens_the_alert_naming_its_cause(
    exc: Exception, expected: tuple[str, str] | None
) -> None:
    assert alert_cause(exc) == expected


def test_a_description_never_holds_an_inss() -> None:
    text = describe(Transient(f"worker {INSS} refused", reason="connect", status=503))
    assert INSS not in text
    assert text.startswith("connect (HTTP 503): worker")


def test_requeue_waits_the_backoff_or_a_longer_retry_after() -> None:
    delays = {1: 2.0, 4: 30.0}
    updates = requeue_updates(
        [A, B], {A: 1, B: 4}, error="down", now_ns=100 * S,
        delay_s=delays.__getitem__, retry_after=10.0,
    )  # fmt: skip
    assert [key for key, _ in updates] == [A, B]
    assert updates[0][1] == {
        "state": State.QUEUED,
        "last_error": "down",
        "updated_ns": 100 * S,
        "next_try_ns": 110 * S,  # the Retry-After is longer than the backoff
    }
    assert updates[1][1]["next_try_ns"] == 130 * S  # the backoff is longer
    assert "attempts" not in updates[1][1]


def test_a_request_that_never_left_gives_its_attempt_back() -> None:
    updates = requeue_updates(
        [A], {A: 3}, error="not_sent", now_ns=0, delay_s=lambda _: 1.0,
        retry_after=None, count_attempt=False,
    )  # fmt: skip
    assert updates[0][1]["attempts"] == 2


def test_an_ambiguous_batch_waits_to_settle_before_its_search() -> None:
    columns = ambiguous_columns(Ambiguous("timeout", reason="read_timeout"), 5 * S, 30.0)
    assert columns["state"] == State.AMBIGUOUS
    assert columns["next_try_ns"] == 35 * S
    assert columns["ambiguous_ns"] == 5 * S


def test_a_400_naming_an_item_refuses_it_and_sends_the_others_again() -> None:
    exc = refusal(400, ("items[1].ssin",))
    updates, refused = refusal_updates([A, B, C], {A: 1, B: 1, C: 3}, exc, 9 * S)
    assert refused == 1
    by_key = dict(updates)
    assert by_key[B]["state"] == State.REFUSED
    assert json.loads(by_key[B]["problem"])["issues"][0]["name"] == "item.ssin"
    assert by_key[B]["final_ns"] == 9 * S
    assert by_key[A] == {"state": State.QUEUED, "updated_ns": 9 * S, "attempts": 0}
    assert by_key[C]["attempts"] == 2  # the attempt is given back: it was not its fault


def test_a_400_naming_no_item_sends_each_item_alone() -> None:
    updates, refused = refusal_updates([A, B], {A: 1, B: 1}, refusal(400), 9 * S)
    assert refused == 0
    assert all(v["state"] == State.QUEUED and v["solo"] == 1 for _, v in updates)


def test_a_400_naming_no_item_of_a_single_item_batch_refuses_it() -> None:
    updates, refused = refusal_updates([A], {A: 1}, refusal(400), 9 * S)
    assert refused == 1
    assert updates[0][1]["state"] == State.REFUSED
