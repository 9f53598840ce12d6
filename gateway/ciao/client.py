"""The gateway's client of the NSSO CIaO REST service.

One :class:`CiaoClient` holds one keep-alive ``requests.Session``, the access token cache and the
retry policies. Its three calls are thin: :meth:`register` (``registerInBulk``, one POST, items
up to the profile's batch limit), :meth:`get` (one registration by id) and :meth:`search`.

What a failure means is the whole point of this module, because CIaO has no idempotency key:

* :class:`Transient` - the server certainly did not act (429, 503, 401 with a stale token,
  connection refused). Retried here, waiting ``Retry-After`` when given.
* :class:`Ambiguous` - a POST was sent and we do not know whether it was committed (read
  timeout, connection dropped mid-request, 500/502/504). Never retried here: the relay must
  search for the registrations before it submits them again.
* :class:`BadResponse` - the answer is not what the contract says (malformed JSON, an HTML error
  page, a problem+json of an unknown type, a result list of the wrong shape). ``after_send``
  tells whether the server may have acted (a 200 with a garbled body) - then it is ambiguous too.
* :class:`Permanent` - the server refused the request for a reason that retrying won't fix (a
  400 with ``issues[]``, 404). Its :attr:`Permanent.problem` keeps the whole problem details
  (status, type, title, detail, every issue). Only a 400 naming an item ends that item.
* :class:`AuthError` - our credentials were refused (the token endpoint's ``invalid_client``,
  a 403 on the API): a configuration problem, never an event's. The relay keeps events queued.

Every ``Retry-After`` (API and token endpoint alike) sets a not-before instant on the client's
clock; no request of any kind leaves before it, and :attr:`CiaoClient.on_not_before` lets the
relay persist it so a restarted process does not call early either.

Every counted state lands in :attr:`CiaoClient.stats`. Nothing here logs a payload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from siteclock.gateway.ciao.abortive import abortive_session
from siteclock.gateway.ciao.answers import (
    ItemResult,
    Registration,
    Timeouts,
    body_retry_after,
    decode_json,
    parse_registration,
    parse_results,
)
from siteclock.gateway.ciao.auth import ClientAssertion, Token, TokenCache
from siteclock.gateway.ciao.environments import Environment
from siteclock.gateway.ciao.policy import (
    PolicyConfig,
    RetryStats,
    read_policy,
    retry_after_seconds,
    submit_policy,
)
from siteclock.gateway.ciao.problems import (
    KNOWN_PROBLEMS,
    PROBLEM_PREFIX,
    Ambiguous,
    AuthError,
    BadResponse,
    CiaoError,
    Permanent,
    ShuttingDown,
    Transient,
    describe_problem,
    whole_problem,
)
from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.log import fields

# The error classes and values live in their own modules (problems, answers); this module keeps
# the names the rest of the gateway has always imported from it.
__all__ = [
    "Ambiguous",
    "AuthError",
    "BadResponse",
    "CiaoClient",
    "CiaoError",
    "ItemResult",
    "Permanent",
    "Registration",
    "ShuttingDown",
    "Timeouts",
    "Transient",
    "describe_problem",
    "whole_problem",
]

log = logging.getLogger(__name__)


class CiaoClient:
    """A CIaO REST client for one environment and one Chaman REST channel."""

    def __init__(
        self,
        environment: Environment,
        *,
        client_id: str,
        private_key_pem: bytes,
        timeouts: Timeouts,
        profile: Profile | None = None,
        policy: PolicyConfig | None = None,
        shutdown: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        token_renew_margin_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        not_before: float = 0.0,
        on_not_before: Callable[[float], None] | None = None,
    ) -> None:
        self.environment = environment
        self.profile = profile or load_profile()
        self.timeouts = timeouts
        self.policy = policy or PolicyConfig()
        self.shutdown = shutdown or threading.Event()
        self._sleep = sleep
        self.stats: Counter[str] = Counter()
        self.retry_stats = RetryStats()
        self._assertion = ClientAssertion(
            client_id,
            private_key_pem,
            environment.token_url,
            ttl_s=self.profile.contract.assertion_ttl_s,
        )
        # One attempt per fetch: the token request runs inside the calling operation's retry
        # loop, so nesting a second loop here would multiply the attempts.
        self.tokens = TokenCache(self._token_once, renew_margin_s=token_renew_margin_s, clock=clock)
        self.clock = clock
        # Abandoned requests are reset, never delivered late (gateway/ciao/abortive.py).
        self._session = abortive_session()
        self._session.headers["Accept"] = "application/json, application/problem+json"
        # The instant (on ``clock``, wall time by default so it survives a restart) before which
        # no request may leave: the latest Retry-After of any endpoint.
        self._not_before = not_before
        self.on_not_before = on_not_before
        self._lock = threading.Lock()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CiaoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public calls

    def register(self, items: Sequence[Mapping[str, Any]]) -> list[ItemResult]:
        """``registerInBulk``: one result per item, in order. See the module doc for errors."""
        limit = self.profile.contract.batch_limit
        if not 1 <= len(items) <= limit:
            raise ValueError(f"a bulk registration holds 1..{limit} items, not {len(items)}")
        body = self._call(
            submit_policy,
            "POST",
            self.profile.api_path("register"),
            post=True,
            json_body={"items": list(items)},
        )
        results, unexpected = parse_results(body, len(items), bad_response=self._bad_response)
        if unexpected:
            # Tolerated (a newer server may add fields) but counted, so a drift is visible.
            self.stats["unexpected_fields"] += 1
        return results

    def get(self, registration_id: str) -> Registration:
        body = self._call(
            read_policy, "GET", self.profile.api_path("lookup", id=registration_id), op="lookup"
        )
        return parse_registration(body, bad_response=self._bad_response)

    def search(
        self,
        *,
        employer: Mapping[str, str],
        workplace: str,
        date_from: str,
        date_to: str,
        ssin: str | None = None,
        omit: frozenset[str] = frozenset(),
    ) -> list[Registration]:
        """Registrations of an employer at a workplace in a period (and of one worker).

        ``omit`` names query parameters not to send (ones the service refused); the caller
        then filters what comes back itself.
        """
        names = self.profile.search
        params: dict[str, Any] = {
            names.workplace: workplace,
            names.date_from: date_from,
            names.date_to: date_to,
            names.page_size: names.max_page_size,
        }
        if "enterpriseNumber" in employer:
            params[names.enterprise_number] = employer["enterpriseNumber"]
        else:
            params[names.foreign_vat_number] = employer["foreignVatNumber"]
        if ssin:
            params[names.ssin] = ssin
        params = {k: v for k, v in params.items() if k not in omit}
        page_size = params.get(names.page_size, names.max_page_size)
        found: list[Registration] = []
        page = 1
        while True:
            if names.page not in omit:
                params[names.page] = page
            body = self._call(
                read_policy, "GET", self.profile.api_path("search"), op="search", params=params
            )
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise self._bad_response(
                    "search answer has no items list",
                    kind="unexpected_shape",
                    after_send=False,
                    status=200,
                )
            found += [parse_registration(i, bad_response=self._bad_response) for i in items]
            total = body.get("total")
            done = (
                len(items) < page_size
                or names.page in omit
                or (isinstance(total, int) and len(found) >= total)
            )
            if done or not items:
                return found
            page += 1

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        policy_factory: Callable[..., Any],
        method: str,
        path: str,
        *,
        op: str = "register",
        post: bool = False,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {
            "shutdown": self.shutdown,
            "stats": self.retry_stats,
        }
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        if policy_factory is read_policy:
            kwargs["operation"] = op
        retrying = policy_factory(self.policy, **kwargs)
        for attempt in retrying:
            with attempt:
                return self._send(method, path, post=post, json_body=json_body, params=params)
        raise AssertionError("unreachable: reraise=True")  # pragma: no cover

    @property
    def not_before(self) -> float:
        """No request leaves before this instant (``clock`` seconds): the last Retry-After."""
        return self._not_before

    def honour_not_before(self, instant: float) -> None:
        """No request before ``instant`` (``clock`` seconds): a Retry-After a previous process
        was given and persisted."""
        with self._lock:
            self._not_before = max(self._not_before, instant)

    def _defer(self, wait_s: float | None) -> None:
        """Remember a Retry-After (of any endpoint) and hand the instant to whoever persists it."""
        if wait_s is None:
            return
        with self._lock:
            until = max(self._not_before, self.clock() + wait_s)
            changed = until > self._not_before
            self._not_before = until
        if changed and self.on_not_before is not None:
            self.on_not_before(until)

    def _await_turn(self) -> None:
        """Honour a Retry-After even across calls: no request before ``_not_before``."""
        while (delay := self._not_before - self.clock()) > 0:
            if self._sleep is not None:
                self._sleep(delay)
            elif self.shutdown.wait(delay):
                raise ShuttingDown("stopping while waiting for Retry-After")
        if self.shutdown.is_set():
            raise ShuttingDown("stopping")

    def _send(
        self,
        method: str,
        path: str,
        *,
        post: bool,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        token = self.tokens.get()
        self._await_turn()
        self.stats["requests"] += 1
        try:
            resp = self._session.request(
                method,
                self.environment.url(path),
                json=json_body,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=(self.timeouts.connect_s, self.timeouts.read_s),
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc, post=post) from None
        return self._check(resp, post=post, token=token)

    def _transport_error(self, exc: requests.RequestException, *, post: bool) -> CiaoError:
        if isinstance(exc, requests.ConnectTimeout) or _never_sent(exc):
            self.stats["transport.not_sent"] += 1
            return Transient(f"{type(exc).__name__}", reason="connect_failed")
        reason = "read_timeout" if isinstance(exc, requests.Timeout) else "connection_dropped"
        self.stats[f"transport.{reason}"] += 1
        cls = Ambiguous if post else Transient
        return cls(f"{type(exc).__name__} after the request was sent", reason=reason)

    def _check(self, resp: requests.Response, *, post: bool, token: str) -> Any:
        status = resp.status_code
        self.stats[f"http.{status}"] += 1
        if status == 401:
            self.tokens.invalidate(token)
            return_error = Transient("access token refused", reason="token_rejected", status=401)
            return_error.retry_after = 0.0
            raise return_error
        wait = self._retry_after(resp)
        if status in (429, 503):
            reason = "rate_limited" if status == 429 else "unavailable"
            raise Transient(f"HTTP {status}", reason=reason, status=status, retry_after=wait)
        if status >= 500:
            cls = Ambiguous if post else Transient
            raise cls(f"HTTP {status}", reason=f"http_{status}", status=status, retry_after=wait)
        body = decode_json(resp, bad_response=self._bad_response, after_send=post and status < 300)
        if status < 300:
            return body
        problem_type = body.get("type") if isinstance(body, dict) else None
        if problem_type not in KNOWN_PROBLEMS:
            raise self._bad_response(
                f"HTTP {status} with unknown problem type",
                kind="unknown_problem",
                after_send=False,
                status=status,
            )
        short = str(problem_type).removeprefix(PROBLEM_PREFIX)
        issues = body.get("issues") if isinstance(body.get("issues"), list) else ()
        if status == 403:
            raise AuthError(
                f"HTTP 403 {short}: credentials lack the right", reason=short, status=status
            )
        problem = whole_problem(body, status, issues)
        raise Permanent(
            describe_problem(problem)[:500],
            reason=short,
            status=status,
            issues=issues,
            problem=body,
        )

    def _retry_after(self, resp: requests.Response) -> float | None:
        """The answer's Retry-After (header, or the body's ``retryAfterSec``), remembered."""
        if resp.status_code < 400:
            return None
        wait = retry_after_seconds(resp.headers.get("Retry-After"), now=self.clock)
        if wait is None and resp.status_code in (429, 503):
            wait = body_retry_after(resp)
        self._defer(wait)
        return wait

    def _bad_response(
        self, message: str, *, kind: str, after_send: bool, status: int
    ) -> BadResponse:
        """Count an answer we cannot use under ``bad_response.<kind>`` and return the error to
        raise: every bad answer is both counted and raised, never one without the other."""
        self.stats[f"bad_response.{kind}"] += 1
        return BadResponse(message, kind=kind, after_send=after_send, status=status)

    def _token_once(self) -> Token:
        """One token request, with a freshly signed assertion (a jti is never replayed)."""
        self._await_turn()
        self.stats["token.requests"] += 1
        try:
            resp = self._session.post(
                self.environment.token_url,
                data=self._assertion.form(),
                timeout=(self.timeouts.connect_s, self.timeouts.read_s),
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc, post=False) from None
        wait = self._retry_after(resp)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Transient(
                f"token HTTP {resp.status_code}",
                status=resp.status_code,
                reason="token_unavailable",
                retry_after=wait,
            )
        body = decode_json(resp, bad_response=self._bad_response, after_send=False)
        if resp.status_code != 200:
            error = body.get("error", "unknown") if isinstance(body, dict) else "unknown"
            self.stats["token.refused"] += 1
            log.error("ciao token refused", extra=fields(status=resp.status_code, error=error))
            raise AuthError(
                f"credentials refused by the token endpoint: {error}",
                reason=f"auth_{error}",
                status=resp.status_code,
            )
        value, expires = body.get("access_token"), body.get("expires_in")
        if not isinstance(value, str) or not isinstance(expires, int | float) or expires <= 0:
            raise self._bad_response(
                "token answer lacks access_token/expires_in",
                kind="token_shape",
                after_send=False,
                status=200,
            )
        return Token(value, float(expires))


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection could not even be opened (so nothing was sent)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        inner = inner.reason
    return isinstance(inner, NewConnectionError)
