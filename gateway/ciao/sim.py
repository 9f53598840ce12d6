"""A local simulator of the NSSO CIaO REST service (``siteclock ciao-sim``).

It speaks the contract as ``profile.toml`` describes it, strictly, so the client is tested
against the same rules the real service is believed to apply:

* ``POST {token}``: OAuth2 client credentials with an RS256 JWT client assertion. It checks the
  signature against the client's registered public key, ``iss`` = ``sub`` = client id, ``aud`` =
  this endpoint's URL, ``exp`` present and not too far ahead, and a ``jti`` never seen before.
  Tokens are Bearer with an expiry; a missing/unknown/expired one gets a Belgif 401.
* ``POST {register}``: schema validation (RFC 9457 problem+json with ``issues[]``), the batch
  limit, then one result per item: ``createdPresenceRegistration{id, validity: pending,
  remarks}`` or ``notCreatedPresenceRegistration{reasons}``.
* ``GET {lookup}`` and ``GET {search}`` (worker, employer, workplace, period; paged).
* Asynchronous validation: a registration stays pending for ``validation_delay_s``, then becomes
  valid, or invalid with SOAP-style remarks derived from reference data the test sets up
  (unknown Declaration of Works, employer not on it, unknown INSS, duplicate, Dimona not OK).
* Faults (:class:`Faults`): latency, 5xx bursts, 429 storms with Retry-After, dropped
  connections, a commit followed by a hang past the client's timeout (or a drop), bad bodies,
  an outage for a given time (:meth:`Sim.outage`: 5xx on every endpoint, the token endpoint
  included, optionally with Retry-After), a token endpoint answering 503 with Retry-After, a
  refused client credential (401 ``invalid_client``) and refused search parameters (400 with a
  Belgif problem naming the parameter). Strictness that the profile sets: the casing of
  ``type`` and the fields a ``placeOfWork`` address needs; the search refuses any query
  parameter it does not know.

It also keeps its own record - every registration, every answer that carried a Retry-After
(429, 503, token endpoint included) with the moment it allowed a retry, every request's arrival
- so a test can prove "exactly once" and "Retry-After honoured" from the server's side.
Its time is ``clock`` (monotonic seconds by default): a benchmark injects a compressed clock.
:class:`SimServer` runs it in-process on loopback with real HTTP.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import heapq
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from siteclock.gateway.ciao.auth import ASSERTION_TYPE
from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.gateway.identifiers import is_valid_inss
from siteclock.protocol import WORKPLACE_RE

log = logging.getLogger(__name__)

PROBLEM = "urn:problem-type:belgif:"
ISSUE = PROBLEM + "input-validation:"
ENTERPRISE_RE = re.compile(r"^[01]\d{9}$")
FUTURE_TOLERANCE = timedelta(minutes=5)

REMARK_DOW_UNKNOWN = "DUC IS NOT EXISTING"
REMARK_EMPLOYER_NOT_ON_DOW = "COMPANY IS NOT KNOWN  AS BUILDER OR  SUBCONTRACTOR IN THIS DUC"
REMARK_INSS_UNKNOWN = "NISS IS NOT KNOW IN THE NATIONAL REGISTER"
REMARK_DUPLICATE = "SAME DECLARATION HAS ALREADY BEEN REGISTERED"
REMARK_DIMONA = "RELATED DIMONA NOT OK"

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


@dataclass
class SimRegistration:
    id: int
    item: dict[str, Any]
    client_id: str
    created_at: float
    validate_at: float
    validity: str
    remarks: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two registrations "the same declaration"."""
        i = self.item
        return (
            i["ssin"],
            _employer_key(i["employer"]),
            i["contractualRelationshipReference"],
            i["type"].lower(),
            _utc(i["registrationDate"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.item, "validity": self.validity, "remarks": self.remarks}


@dataclass(frozen=True)
class Throttle:
    """One answer with a Retry-After (429, 503, token endpoint too): who, when (sim clock), and
    the earliest moment it allowed the next request."""

    client_id: str
    issued_at: float
    retry_at: float


def _outage_at(faults: Faults, now: float, *, token: bool = False) -> Outage | None:
    return next(
        (
            o
            for o in faults.outages
            if o.start <= now < o.end and (o.token_endpoint or not token)
        ),
        None,
    )


def _employer_key(employer: dict[str, Any]) -> str:
    return str(employer.get("enterpriseNumber") or employer.get("foreignVatNumber"))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _utc(value: str) -> str:
    moment = _parse_time(value)
    return moment.astimezone(UTC).isoformat() if moment else value


class SimState:
    """Everything the simulator knows; all access under one lock."""

    def __init__(
        self,
        profile: Profile,
        *,
        validation_delay_s: float,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.validation_delay_s = validation_delay_s
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.clients: dict[str, Any] = {}
        self.jtis: set[str] = set()
        self.tokens: dict[str, tuple[str, float]] = {}
        self.registrations: dict[int, SimRegistration] = {}
        self._by_place: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._by_key: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._due: list[tuple[float, int]] = []
        self.next_id = 17_000
        self.throttles: list[Throttle] = []
        self.arrivals: list[tuple[str, float]] = []
        self.stats: Counter[str] = Counter()
        self.api_requests = 0
        # Reference data for validation; None = "everything is known and fine".
        self.dows: dict[str, set[str]] | None = None
        self.known_ssins: set[str] | None = None
        self.dimona_not_ok: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ validation

    def settle(self, now: float | None = None) -> None:
        """Turn due pending registrations into a final validity (call with the lock held)."""
        now = self.clock() if now is None else now
        while self._due and self._due[0][0] <= now:
            _, reg_id = heapq.heappop(self._due)
            reg = self.registrations[reg_id]
            reg.remarks = self._remarks(reg)
            validity = self.profile.validity
            reg.validity = validity.invalid if reg.remarks else validity.valid
            self.stats[f"validated.{reg.validity}"] += 1

    def _remarks(self, reg: SimRegistration) -> list[str]:
        item, remarks = reg.item, []
        dow, employer, ssin = (
            item["contractualRelationshipReference"],
            _employer_key(item["employer"]),
            item["ssin"],
        )
        if self.dows is not None:
            if dow not in self.dows:
                remarks.append(REMARK_DOW_UNKNOWN)
            elif employer not in self.dows[dow]:
                remarks.append(REMARK_EMPLOYER_NOT_ON_DOW)
        if self.known_ssins is not None and ssin not in self.known_ssins:
            remarks.append(REMARK_INSS_UNKNOWN)
        if (ssin, employer) in self.dimona_not_ok:
            remarks.append(REMARK_DIMONA)
        if self._by_key[reg.key][0] != reg.id:
            remarks.append(REMARK_DUPLICATE)
        return remarks

    def create(self, item: dict[str, Any], client_id: str) -> SimRegistration:
        now = self.clock()
        reg = SimRegistration(
            id=self.next_id,
            item=item,
            client_id=client_id,
            created_at=now,
            validate_at=now + self.validation_delay_s,
            validity=self.profile.validity.pending,
        )
        self.next_id += 1
        self.registrations[reg.id] = reg
        self._by_key[reg.key].append(reg.id)
        self._by_place[
            (_employer_key(item["employer"]), item["contractualRelationshipReference"])
        ].append(reg.id)
        heapq.heappush(self._due, (reg.validate_at, reg.id))
        self.stats["registrations"] += 1
        return reg

    def search(self, employer: str, workplace: str) -> Iterable[SimRegistration]:
        return (self.registrations[i] for i in self._by_place.get((employer, workplace), ()))


class Sim:
    """The Flask application and its state. Use :class:`SimServer` to serve it in-process."""

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        validation_delay_s: float = 0.5,
        seed: int = 0,
        audience: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile or load_profile()
        self.state = SimState(
            self.profile, validation_delay_s=validation_delay_s, seed=seed, clock=clock
        )
        self.audience = audience
        self.app = self._build_app()

    # ------------------------------------------------------------------ test controls

    def register_client(self, client_id: str, public_key_pem: bytes) -> None:
        key = load_pem_public_key(public_key_pem)
        with self.state.lock:
            self.state.clients[client_id] = key

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

    def set_reference_data(
        self,
        *,
        dows: dict[str, Iterable[str]] | None = None,
        known_ssins: Iterable[str] | None = None,
        dimona_not_ok: Iterable[tuple[str, str]] = (),
    ) -> None:
        """What the NSSO's registers would say: Declarations of Works with the employers on
        each, the INSS numbers it knows, (INSS, employer) pairs whose Dimona is not OK."""
        with self.state.lock:
            self.state.dows = None if dows is None else {k: set(v) for k, v in dows.items()}
            self.state.known_ssins = None if known_ssins is None else set(known_ssins)
            self.state.dimona_not_ok = set(dimona_not_ok)

    def expire_tokens(self) -> None:
        """Make every issued token expired now (a token expiring mid-run)."""
        with self.state.lock:
            self.state.tokens = {t: (c, 0.0) for t, (c, _) in self.state.tokens.items()}

    def registrations(self) -> list[dict[str, Any]]:
        """The simulator's own record: every registration it created, settled, by id."""
        with self.state.lock:
            self.state.settle()
            return [
                r.to_json() for r in sorted(self.state.registrations.values(), key=lambda r: r.id)
            ]

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

    @property
    def stats(self) -> Counter[str]:
        with self.state.lock:
            return Counter(self.state.stats)

    # ------------------------------------------------------------------ app

    def _build_app(self) -> Flask:
        app = Flask("siteclock-ciao-sim")
        paths = self.profile.paths
        app.add_url_rule(paths.token, "token", self._token, methods=["POST"])
        app.add_url_rule(
            self.profile.api_path("register"),
            "register",
            self._api(self._register, True),
            methods=["POST"],
        )
        lookup_rule = self.profile.paths.api_base + paths.lookup.replace("{id}", "<int:reg_id>")
        app.add_url_rule(lookup_rule, "lookup", self._api(self._lookup, False), methods=["GET"])
        app.add_url_rule(
            self.profile.api_path("search"),
            "search",
            self._api(self._search, False),
            methods=["GET"],
        )
        return app

    # ------------------------------------------------------------------ token endpoint

    def _token(self) -> Response:
        form, state = request.form, self.state
        refusal = self._token_fault(form.get("client_assertion", ""))
        if refusal is not None:
            return refusal
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return _oauth_error(400, "invalid_request", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return _oauth_error(400, "invalid_request", "client_assertion is not a JWT")
        client_id = claims.get("iss")
        with state.lock:
            key = state.clients.get(client_id)
        if key is None:
            return _oauth_error(401, "invalid_client", "unknown client")
        audience = self.audience or request.base_url
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=audience,
                issuer=client_id,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            state.stats[f"token.refused.{type(exc).__name__}"] += 1
            return _oauth_error(401, "invalid_client", f"assertion rejected: {exc}")
        if claims["sub"] != client_id:
            return _oauth_error(401, "invalid_client", "sub must equal iss (the client id)")
        if claims["exp"] - time.time() > self.profile.contract.assertion_max_ttl_s:
            return _oauth_error(401, "invalid_client", "assertion exp is too far ahead")
        with state.lock:
            if claims["jti"] in state.jtis:
                state.stats["token.refused.replayed_jti"] += 1
                return _oauth_error(401, "invalid_client", "jti already used")
            state.jtis.add(claims["jti"])
            ttl = state.faults.token_ttl_s or self.profile.contract.token_ttl_s
            token = secrets.token_urlsafe(32)
            state.tokens[token] = (client_id, state.clock() + ttl)
            state.stats["token.issued"] += 1
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})

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
            outage = _outage_at(f, now, token=True)
            if outage is not None:
                status, wait = outage.status, outage.retry_after_s
            elif f.token_unavailable > 0:
                state.faults = dataclasses.replace(f, token_unavailable=f.token_unavailable - 1)
                status, wait = 503, f.token_retry_after_s
            elif f.refuse_credentials:
                state.stats["token.refused.fault"] += 1
                return _oauth_error(401, "invalid_client", "client credentials refused")
            else:
                return None
            headers = {}
            if wait is not None:
                state.throttles.append(Throttle(client_id, now, now + wait))
                headers["Retry-After"] = str(wait)
        state.stats[f"token.fault.{status}"] += 1
        return _json(
            status,
            {"error": "temporarily_unavailable", "error_description": "token service down"},
            headers=headers,
        )

    # ------------------------------------------------------------------ API pipeline

    def _api(
        self, handler: Callable[[str, dict[str, Any]], Response], commits: bool
    ) -> Callable[..., Response]:
        def view(**kwargs: Any) -> Response:
            state, arrived = self.state, self.state.clock()
            outage = self._outage(arrived)
            if outage is not None:
                return outage
            client_id, problem = self._authenticate(arrived)
            if problem is not None:
                return problem
            if state.faults.api_forbidden:
                state.stats["fault.403"] += 1
                return _problem(403, "missingPermission", "Missing permission")
            with state.lock:
                state.arrivals.append((client_id, arrived))
                state.api_requests += 1
                state.stats[f"api.{handler.__name__.lstrip('_')}"] += 1
                plan = self._plan(commits)
                if plan == "429":
                    faults = state.faults
                    state.throttles.append(
                        Throttle(client_id, arrived, arrived + faults.retry_after_s)
                    )
            if plan == "429":
                state.stats["fault.429"] += 1
                return _problem(
                    429,
                    "tooManyRequests",
                    "Too Many Requests",
                    headers={"Retry-After": str(state.faults.retry_after_s)},
                    retryAfterSec=state.faults.retry_after_s,
                )
            if state.faults.latency_s:
                time.sleep(state.faults.latency_s)
            if plan.startswith("5"):
                state.stats[f"fault.{plan}"] += 1
                name = "serviceUnavailable" if plan == "503" else "internalServerError"
                return _problem(int(plan), name, "Server error")
            if plan == "drop":
                state.stats["fault.drop"] += 1
                return _drop()
            if plan == "html":
                state.stats["fault.html"] += 1
                return Response(
                    "<html><body><h1>Gateway error</h1></body></html>",
                    200,
                    content_type="text/html",
                )
            if plan == "unknown_problem":
                state.stats["fault.unknown_problem"] += 1
                return _json(
                    400,
                    {
                        "type": "urn:problem-type:nsso:ciao:somethingNew",
                        "status": 400,
                        "title": "New rule",
                    },
                    problem=True,
                )
            response = handler(client_id, kwargs)
            if plan == "hang":
                state.stats["fault.commit_then_hang"] += 1
                time.sleep(state.faults.hang_s)
            elif plan == "commit_drop":
                state.stats["fault.commit_then_drop"] += 1
                return _drop()
            elif plan == "malformed_json" and response.status_code == 200:
                state.stats["fault.malformed_json"] += 1
                return Response(
                    b'{"items": [{"createdPresenceRegistration": {"id": ',
                    200,
                    content_type="application/json",
                )
            elif plan == "unexpected_fields" and response.status_code == 200:
                state.stats["fault.unexpected_fields"] += 1
                body = json.loads(response.get_data())
                body["newTopLevel"] = {"x": 1}
                for entry in body["items"]:
                    for inner in entry.values():
                        inner["futureField"] = "surprise"
                return _json(200, body)
            return response

        view.__name__ = handler.__name__
        return view

    def _outage(self, now: float) -> Response | None:
        """During an outage every API request fails before anything else is looked at. The
        caller is named by its token when it has a valid one (to check Retry-After)."""
        state = self.state
        with state.lock:
            outage = _outage_at(state.faults, now)
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
        return _problem(status, name, "Service unavailable", headers=headers)

    def _authenticate(self, now: float) -> tuple[str, Response | None]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self.state.stats["auth.missing"] += 1
            return "", _problem(
                401, "noAccessToken", "No access token", headers={"WWW-Authenticate": "Bearer"}
            )
        with self.state.lock:
            entry = self.state.tokens.get(header.removeprefix("Bearer ").strip())
        if entry is None or self.state.faults.api_token_refused:
            self.state.stats["fault.401" if entry else "auth.invalid"] += 1
            return "", _problem(
                401,
                "invalidAccessToken",
                "Invalid access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        client_id, expires_at = entry
        if now >= expires_at:
            self.state.stats["auth.expired"] += 1
            return "", _problem(
                401,
                "expiredAccessToken",
                "Expired access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return client_id, None

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

    # ------------------------------------------------------------------ operations

    def _register(self, client_id: str, _: dict[str, Any]) -> Response:
        body = request.get_json(silent=True)
        limit = self.profile.contract.batch_limit
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return _bad_request([_issue("schemaViolation", "body must be {items: [...]}", "items")])
        items = body["items"]
        issues = [_issue("unknownInput", "unknown field", k) for k in body if k != "items"]
        if not 1 <= len(items) <= limit:
            issues.append(_issue("schemaViolation", f"items must hold 1..{limit} entries", "items"))
        for index, item in enumerate(items[:limit]):
            issues += self._item_issues(index, item)
        if issues:
            self.state.stats["register.bad_request"] += 1
            return _bad_request(issues)
        results = []
        now = datetime.now(UTC)
        with self.state.lock:
            for item in items:
                reasons = []
                if not is_valid_inss(item["ssin"]):
                    reasons.append(
                        {"code": "INVALID_SSIN", "description": "check digits do not match"}
                    )
                if _parse_time(item["registrationDate"]) > now + FUTURE_TOLERANCE:  # type: ignore[operator]
                    reasons.append(
                        {
                            "code": "REGISTRATION_IN_FUTURE",
                            "description": "registering in advance is not allowed",
                        }
                    )
                if reasons:
                    self.state.stats["register.not_created"] += 1
                    results.append({"notCreatedPresenceRegistration": {"reasons": reasons}})
                    continue
                reg = self.state.create(dict(item), client_id)
                results.append(
                    {
                        "createdPresenceRegistration": {
                            "id": reg.id,
                            "validity": reg.validity,
                            "remarks": [],
                        }
                    }
                )
        return _json(200, {"items": results})

    def _item_issues(self, index: int, item: Any) -> list[dict[str, Any]]:
        at = f"items[{index}]"
        if not isinstance(item, dict):
            return [_issue("schemaViolation", "item must be an object", at)]
        allowed = {
            "registrationDate",
            "ssin",
            "type",
            "employer",
            "placeOfWork",
            "contractualRelationshipReference",
        }
        issues = [
            _issue("unknownInput", "unknown field", f"{at}.{k}") for k in item if k not in allowed
        ]
        issues += [
            _issue("schemaViolation", "required", f"{at}.{k}")
            for k in sorted(allowed - {"placeOfWork"})
            if k not in item
        ]
        if issues:
            return issues
        if _parse_time(item["registrationDate"]) is None:
            issues.append(
                _issue(
                    "schemaViolation",
                    "not an RFC 3339 date-time with offset",
                    f"{at}.registrationDate",
                    item["registrationDate"],
                )
            )
        if not isinstance(item["ssin"], str) or not re.fullmatch(r"\d{11}", item["ssin"]):
            issues.append(_issue("schemaViolation", "ssin must be 11 digits", f"{at}.ssin"))
        accepted = self.profile.accepted_types()
        if item["type"] not in accepted:
            issues.append(
                _issue(
                    "schemaViolation",
                    "unknown type",
                    f"{at}.type",
                    item["type"],
                    detail="type must be one of " + ", ".join(sorted(accepted)),
                )
            )
        employer = item["employer"]
        ok_employer = (
            isinstance(employer, dict)
            and len(employer) == 1
            and (
                ENTERPRISE_RE.match(str(employer.get("enterpriseNumber", "")))
                or re.fullmatch(
                    r"[A-Z]{2}[0-9A-Z+*]{2,12}", str(employer.get("foreignVatNumber", ""))
                )
            )
        )
        if not ok_employer:
            issues.append(
                _issue(
                    "schemaViolation",
                    "employer needs enterpriseNumber or foreignVatNumber",
                    f"{at}.employer",
                )
            )
        if not WORKPLACE_RE.match(str(item["contractualRelationshipReference"])):
            issues.append(
                _issue(
                    "schemaViolation",
                    "not a Declaration of Works reference",
                    f"{at}.contractualRelationshipReference",
                )
            )
        place = item.get("placeOfWork")
        if place is not None:
            issues += _place_issues(place, f"{at}.placeOfWork", self.profile.address_fields)
        return issues

    def _lookup(self, client_id: str, kwargs: dict[str, Any]) -> Response:
        with self.state.lock:
            self.state.settle()
            reg = self.state.registrations.get(kwargs["reg_id"])
            body = reg.to_json() if reg else None
        if body is None:
            return _problem(404, "resourceNotFound", "No such registration")
        return _json(200, body)

    def _search(self, client_id: str, _: dict[str, Any]) -> Response:
        names, args = self.profile.search, request.args
        known = {getattr(names, f.name) for f in dataclasses.fields(names)} - {names.max_page_size}
        refused = [
            _issue(
                "unknownParameter",
                "Unknown query parameter",
                name,
                where="query",
                detail=f"{name} is not a parameter of this search",
            )
            for name in args
            if name not in known or name in self.state.faults.refused_query_params
        ]
        if refused:
            self.state.stats["search.refused_parameter"] += 1
            return _bad_request(refused)
        employer = args.get(names.enterprise_number) or args.get(names.foreign_vat_number)
        workplace = args.get(names.workplace)
        start, end = _parse_time(args.get(names.date_from)), _parse_time(args.get(names.date_to))
        issues = [
            _issue("schemaViolation", "required", name, where="query")
            for name, value in (
                (names.enterprise_number, employer),
                (names.workplace, workplace),
                (names.date_from, start),
                (names.date_to, end),
            )
            if value is None
        ]
        try:
            page = int(args.get(names.page, "1"))
            size = int(args.get(names.page_size, "50"))
        except ValueError:
            page, size = 0, 0
        if page < 1 or not 1 <= size <= names.max_page_size:
            issues.append(_issue("schemaViolation", "bad paging", names.page_size, where="query"))
        if issues:
            return _bad_request(issues)
        ssin = args.get(names.ssin)
        with self.state.lock:
            self.state.settle()
            hits = [
                r.to_json()
                for r in self.state.search(str(employer), str(workplace))
                if (ssin is None or r.item["ssin"] == ssin)
                and start <= _parse_time(r.item["registrationDate"]) <= end  # type: ignore[operator]
            ]
        hits.sort(key=lambda r: r["id"])
        chunk = hits[(page - 1) * size : page * size]
        return _json(200, {"items": chunk, "total": len(hits), "page": page, "pageSize": size})


# --------------------------------------------------------------------------- responses


def _json(
    status: int, body: Any, *, problem: bool = False, headers: dict[str, str] | None = None
) -> Response:
    ctype = "application/problem+json" if problem else "application/json"
    return Response(json.dumps(body), status, headers=headers, content_type=ctype)


def _problem(
    status: int, name: str, title: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return _json(
        status,
        {"type": PROBLEM + name, "status": status, "title": title, **extra},
        problem=True,
        headers=headers,
    )


def _issue(
    kind: str,
    title: str,
    name: str,
    value: Any = None,
    *,
    where: str = "body",
    detail: str | None = None,
) -> dict[str, Any]:
    issue = {"type": ISSUE + kind, "title": title, "in": where, "name": name}
    if value is not None and not name.endswith("ssin"):  # never echo an INSS
        issue["value"] = value
    if detail is not None:
        issue["detail"] = detail
    return issue


def _bad_request(issues: list[dict[str, Any]]) -> Response:
    return _problem(
        400, "badRequest", "Bad Request", detail="The input message is incorrect", issues=issues
    )


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _place_issues(place: Any, at: str, address_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """What is wrong with a placeOfWork: coordinates in range, or an address with every field
    the profile requires (each missing field is its own issue, named)."""
    coords = place.get("coordinates") if isinstance(place, dict) else None
    address = place.get("address") if isinstance(place, dict) else None
    if isinstance(coords, dict):
        lat, lon = coords.get("latitude"), coords.get("longitude")
        if (
            isinstance(lat, int | float)
            and isinstance(lon, int | float)
            and -90 <= lat <= 90
            and -180 <= lon <= 180
        ):
            return []
        return [_issue("schemaViolation", "coordinates out of range", f"{at}.coordinates")]
    if not isinstance(address, dict):
        return [_issue("schemaViolation", "placeOfWork needs coordinates or address", at)]
    return [
        _issue(
            "schemaViolation",
            "required",
            f"{at}.address.{name}",
            detail=f"an address needs {', '.join(address_fields)}",
        )
        for name in address_fields
        if not (isinstance(address.get(name), str) and address[name].strip())
    ]


def _drop() -> Response:
    """Close the client's connection without a response (a network drop)."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone: the effect we wanted
            sock.shutdown(socket.SHUT_RDWR)
    return Response(b"", 500)


# --------------------------------------------------------------------------- server


class _QuietHandler(WSGIRequestHandler):
    """No access log: a search URL carries an INSS, which must never reach a log line."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            log.debug("sim server: %s", message % args)


class SimServer:
    """The simulator on 127.0.0.1, real HTTP, in a background thread (werkzeug, threaded).

    Example::

        with SimServer() as sim:
            sim.register_client("self_service_chaman_1_x", public_pem)
            sim.set_faults(latency_s=0.05, rate_limit_burst=3)
            ... CiaoClient(for_local_sim(sim.url), ...) ...
            assert len(sim.registrations()) == n
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **sim_options: Any) -> None:
        self.sim = Sim(**sim_options)
        self._server = make_server(
            host, port, self.sim.app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="ciao-sim", daemon=True
        )
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> SimServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        # register_client, set_faults, registrations, throttles, ... live on the Sim.
        return getattr(self.sim, name)


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    """``siteclock ciao-sim``: serve the simulator until interrupted."""
    from siteclock.log import setup

    parser = argparse.ArgumentParser(prog="siteclock ciao-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="CLIENT_ID=PUBLIC_KEY.pem",
        help="register a client and its public key (repeatable)",
    )
    parser.add_argument("--profile", type=Path, help="contract profile (default: packaged)")
    parser.add_argument("--validation-delay", type=float, default=5.0, help="seconds pending")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--token-ttl", type=int, help="token lifetime in seconds")
    args = parser.parse_args(argv)
    setup()
    server = SimServer(
        args.host,
        args.port,
        profile=load_profile(args.profile),
        validation_delay_s=args.validation_delay,
    )
    for spec in args.client:
        client_id, _, pem = spec.partition("=")
        if not pem:
            parser.error(f"--client {spec!r}: expected CLIENT_ID=PUBLIC_KEY.pem")
        server.register_client(client_id, Path(pem).read_bytes())
    server.set_faults(latency_s=args.latency, token_ttl_s=args.token_ttl)
    log.info("ciao simulator listening", extra={"fields": {"url": server.url}})
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()
    return 0
