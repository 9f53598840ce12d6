"""The CIaO simulator's fault controls: what it does wrong, on purpose, and when.

:class:`Faults` holds the rates, bursts and outage windows a test sets; :class:`FaultControls`
(part of :class:`~siteclock.gateway.ciao.sim_app.Sim`) sets them and decides each request's
fault, and keeps the record of every Retry-After it gave (:class:`Throttle`) so a test can
prove from the server's side that the client honoured it.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from flask import Response, request

from siteclock.gateway.ciao.sim_http import json_response, oauth_error, problem_response

if TYPE_CHECKING:
    from siteclock.gateway.ciao.sim_state import SimState

BAD_BODIES = ("malformed_json", "html", "unexpected_fields", "unknown_problem")


@dataclass(frozen=True)
class Outage:
    """A window of the simulator's clock in which every request answers ``status``."""

    start: float
    end: float
    status: int = 503
    retry_after_s: int | None = None
    token_endpoint: bool = True  # False: the token endpoint keeps working (API-only outage)


@dataclass(frozen=True)
class Faults:
    """What the simulator does wrong, on purpose. Rates are probabilities per API request;
    bursts count down one per API request. Defaults: a well-behaved service."""

    latency_s: float = 0.0
    error_rate: float = 0.0  # 5xx before processing
    error_burst: int = 0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_burst: int = 0  # a 429 storm: the next N API requests
    rate_limit_every: int = 0  # every Nth API request gets a 429
    retry_after_s: int = 1
    drop_rate: float = 0.0  # close the connection unanswered, before processing
    commit_then_hang_rate: float = 0.0  # commit, then answer only after hang_s
    commit_then_drop_rate: float = 0.0  # commit, then close the connection unanswered
    hang_s: float = 1.0
    bad_body: str | None = None  # one of BAD_BODIES, for the next bad_body_count registers
    bad_body_count: int = 0
    token_ttl_s: int | None = None  # overrides the profile's token lifetime
    # Outages: every request (token endpoint too) inside a window gets its status, with its
    # Retry-After when set. Scheduled by Sim.outage.
    outages: tuple[Outage, ...] = ()
    token_unavailable: int = 0  # the next N token requests get 503 with Retry-After
    token_retry_after_s: int = 2
    refuse_credentials: bool = False  # the token endpoint answers 401 invalid_client
    refused_query_params: tuple[str, ...] = ()  # search parameters answered with a 400
    api_forbidden: bool = False  # every API request gets 403 missingPermission
    api_token_refused: bool = False  # every API request gets 401 invalidAccessToken

    def __post_init__(self) -> None:
        if self.bad_body is not None and self.bad_body not in BAD_BODIES:
            raise ValueError(f"bad_body must be one of {BAD_BODIES}")


@dataclass(frozen=True)
class Throttle:
    """One answer with a Retry-After (429, 503, token endpoint too): who, when (sim clock), and
    the earliest moment it allowed the next request."""

    client_id: str
    issued_at: float
    retry_at: float


def outage_at(faults: Faults, now: float, *, token: bool = False) -> Outage | None:
    return next(
        (o for o in faults.outages if o.start <= now < o.end and (o.token_endpoint or not token)),
        None,
    )


class FaultControls:
    """The test controls for faults, and the per-request fault decisions, of the simulator."""

    state: SimState

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``set_faults(Faults(...))``) or change some (``latency_s=0.05``)."""
        with self.state.lock:
            base = faults if faults is not None else self.state.faults
            self.state.faults = dataclasses.replace(base, **changes)
            return self.state.faults

    def outage(
        self,
        duration_s: float,
        *,
        status: int = 503,
        retry_after_s: int | None = None,
        after_s: float = 0.0,
        token_endpoint: bool = True,
    ) -> Faults:
        """Every request, token endpoint included, answers ``status`` for ``duration_s`` seconds
        of the simulator's clock, starting ``after_s`` from now (with Retry-After when
        ``retry_after_s`` is set). Outages add up: schedule several for phases.
        ``token_endpoint=False`` leaves the token endpoint up (only the API is down)."""
        start = self.state.clock() + after_s
        window = Outage(start, start + duration_s, status, retry_after_s, token_endpoint)
        return self.set_faults(outages=(*self.state.faults.outages, window))

    def expire_tokens(self) -> None:
        """Make every issued token expired now (a token expiring mid-run)."""
        with self.state.lock:
            self.state.tokens = {t: (c, 0.0) for t, (c, _) in self.state.tokens.items()}

    def throttles(self) -> list[Throttle]:
        with self.state.lock:
            return list(self.state.throttles)

    def retry_after_violations(self) -> list[tuple[Throttle, float]]:
        """Requests (API or token) that came back before a Retry-After they were given:
        (the answer with the Retry-After, the early arrival)."""
        with self.state.lock:
            arrivals, throttles = list(self.state.arrivals), list(self.state.throttles)
        by_client: dict[str, list[float]] = defaultdict(list)
        for client, at in arrivals:
            by_client[client].append(at)
        for times in by_client.values():
            times.sort()
        found = []
        for t in throttles:
            times = by_client.get(t.client_id, [])
            start = bisect.bisect_right(times, t.issued_at)
            end = bisect.bisect_left(times, t.retry_at)
            found += [(t, at) for at in times[start:end]]
        return found

    def _token_fault(self, assertion: str) -> Response | None:
        """Record the token request's arrival; answer it with a fault when one is set."""
        state = self.state
        try:
            client_id = str(jwt.decode(assertion, options={"verify_signature": False})["iss"])
        except (jwt.InvalidTokenError, KeyError):
            client_id = ""
        with state.lock:
            now = state.clock()
            state.arrivals.append((client_id, now))
            f = state.faults
            outage = outage_at(f, now, token=True)
            if outage is not None:
                status, wait = outage.status, outage.retry_after_s
            elif f.token_unavailable > 0:
                state.faults = dataclasses.replace(f, token_unavailable=f.token_unavailable - 1)
                status, wait = 503, f.token_retry_after_s
            elif f.refuse_credentials:
                state.stats["token.refused.fault"] += 1
                return oauth_error(401, "invalid_client", "client credentials refused")
            else:
                return None
            headers = {}
            if wait is not None:
                state.throttles.append(Throttle(client_id, now, now + wait))
                headers["Retry-After"] = str(wait)
        state.stats[f"token.fault.{status}"] += 1
        return json_response(
            status,
            {"error": "temporarily_unavailable", "error_description": "token service down"},
            headers=headers,
        )

    def _outage(self, now: float) -> Response | None:
        """During an outage every API request fails before anything else is looked at. The
        caller is named by its token when it has a valid one (to check Retry-After)."""
        state = self.state
        with state.lock:
            outage = outage_at(state.faults, now)
            if outage is None:
                return None
            header = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            client_id = state.tokens.get(header, ("", 0.0))[0]
            state.arrivals.append((client_id, now))
            headers = {}
            if outage.retry_after_s is not None:
                state.throttles.append(Throttle(client_id, now, now + outage.retry_after_s))
                headers["Retry-After"] = str(outage.retry_after_s)
            state.stats[f"fault.outage.{outage.status}"] += 1
            status = outage.status
        name = "serviceUnavailable" if status == 503 else "internalServerError"
        return problem_response(status, name, "Service unavailable", headers=headers)

    def _plan(self, commits: bool) -> str:
        """Decide this request's fault (lock held). Order: 429, 5xx, drop, bad body, commit."""
        state, f = self.state, self.state.faults
        rng = state.rng
        if f.rate_limit_burst > 0:
            state.faults = dataclasses.replace(f, rate_limit_burst=f.rate_limit_burst - 1)
            return "429"
        if f.rate_limit_every and state.api_requests % f.rate_limit_every == 0:
            return "429"
        if f.error_burst > 0:
            state.faults = dataclasses.replace(f, error_burst=f.error_burst - 1)
            return str(rng.choice(f.error_statuses))
        if f.error_rate and rng.random() < f.error_rate:
            return str(rng.choice(f.error_statuses))
        if f.drop_rate and rng.random() < f.drop_rate:
            return "drop"
        if not commits:
            return "ok"
        if f.bad_body and f.bad_body_count > 0:
            state.faults = dataclasses.replace(f, bad_body_count=f.bad_body_count - 1)
            return f.bad_body
        if f.commit_then_hang_rate and rng.random() < f.commit_then_hang_rate:
            return "hang"
        if f.commit_then_drop_rate and rng.random() < f.commit_then_drop_rate:
            return "commit_drop"
        return "ok"
