"""The CIaO simulator's application: its routes (token, register, lookup, search), the
authentication of each API request and the operations, on a :class:`SimState`.
See :mod:`siteclock.gateway.ciao.sim` for what it simulates and how strictly.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, Response, request

from siteclock.gateway.ciao.auth import ASSERTION_TYPE
from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.profile import load as load_profile
from siteclock.gateway.ciao.sim_faults import FaultControls, Throttle
from siteclock.gateway.ciao.sim_http import (
    bad_request,
    drop_connection,
    input_issue,
    item_issues,
    json_response,
    oauth_error,
    parse_time,
    problem_response,
)
from siteclock.gateway.ciao.sim_state import SimState
from siteclock.gateway.identifiers import is_valid_inss

FUTURE_TOLERANCE = timedelta(minutes=5)


class Sim(FaultControls):
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

    def reject(self, inss: str, remark: str) -> None:
        """Every registration of this INSS is validated invalid with ``remark`` (the command
        line's ``--reject``: a demo or a test of the employer's view of a rejection)."""
        with self.state.lock:
            self.state.rejected[inss] = remark

    def registrations(self) -> list[dict[str, Any]]:
        """The simulator's own record: every registration it created, settled, by id."""
        with self.state.lock:
            self.state.settle()
            return [
                r.to_json() for r in sorted(self.state.registrations.values(), key=lambda r: r.id)
            ]

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
            return oauth_error(400, "unsupported_grant_type", "only client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return oauth_error(400, "invalid_request", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return oauth_error(400, "invalid_request", "client_assertion is not a JWT")
        client_id = claims.get("iss")
        with state.lock:
            key = state.clients.get(client_id)
        if key is None:
            return oauth_error(401, "invalid_client", "unknown client")
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
            return oauth_error(401, "invalid_client", f"assertion rejected: {exc}")
        if claims["sub"] != client_id:
            return oauth_error(401, "invalid_client", "sub must equal iss (the client id)")
        if claims["exp"] - time.time() > self.profile.contract.assertion_max_ttl_s:
            return oauth_error(401, "invalid_client", "assertion exp is too far ahead")
        with state.lock:
            if claims["jti"] in state.jtis:
                state.stats["token.refused.replayed_jti"] += 1
                return oauth_error(401, "invalid_client", "jti already used")
            state.jtis.add(claims["jti"])
            ttl = state.faults.token_ttl_s or self.profile.contract.token_ttl_s
            token = secrets.token_urlsafe(32)
            state.tokens[token] = (client_id, state.clock() + ttl)
            state.stats["token.issued"] += 1
        return json_response(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
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
                return problem_response(403, "missingPermission", "Missing permission")
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
                return problem_response(
                    429,
                    "tooManyRequests",
                    "Too Many Requests",
                    headers={"Retry-After": str(state.faults.retry_after_s)},
                    retryAfterSec=state.faults.retry_after_s,
                )
            if state.faults.latency_s:
                # Pacing, on purpose: the simulated network and service latency is real time,
                # what a client's timeouts and throughput see (a compressed clock does not move).
                time.sleep(state.faults.latency_s)
            if plan.startswith("5"):
                state.stats[f"fault.{plan}"] += 1
                name = "serviceUnavailable" if plan == "503" else "internalServerError"
                return problem_response(int(plan), name, "Server error")
            if plan == "drop":
                state.stats["fault.drop"] += 1
                return drop_connection()
            if plan == "html":
                state.stats["fault.html"] += 1
                return Response(
                    "<html><body><h1>Gateway error</h1></body></html>",
                    200,
                    content_type="text/html",
                )
            if plan == "unknown_problem":
                state.stats["fault.unknown_problem"] += 1
                return json_response(
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
                # The fault itself: a server that committed, then answers too late for the
                # client's read timeout.
                time.sleep(state.faults.hang_s)
            elif plan == "commit_drop":
                state.stats["fault.commit_then_drop"] += 1
                return drop_connection()
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
                return json_response(200, body)
            return response

        view.__name__ = handler.__name__
        return view

    def _authenticate(self, now: float) -> tuple[str, Response | None]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self.state.stats["auth.missing"] += 1
            return "", problem_response(
                401, "noAccessToken", "No access token", headers={"WWW-Authenticate": "Bearer"}
            )
        with self.state.lock:
            entry = self.state.tokens.get(header.removeprefix("Bearer ").strip())
        if entry is None or self.state.faults.api_token_refused:
            self.state.stats["fault.401" if entry else "auth.invalid"] += 1
            return "", problem_response(
                401,
                "invalidAccessToken",
                "Invalid access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        client_id, expires_at = entry
        if now >= expires_at:
            self.state.stats["auth.expired"] += 1
            return "", problem_response(
                401,
                "expiredAccessToken",
                "Expired access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return client_id, None

    # ------------------------------------------------------------------ operations

    def _register(self, client_id: str, _: dict[str, Any]) -> Response:
        body = request.get_json(silent=True)
        limit = self.profile.contract.batch_limit
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return bad_request(
                [input_issue("schemaViolation", "body must be {items: [...]}", "items")]
            )
        items = body["items"]
        issues = [input_issue("unknownInput", "unknown field", k) for k in body if k != "items"]
        if not 1 <= len(items) <= limit:
            issues.append(
                input_issue("schemaViolation", f"items must hold 1..{limit} entries", "items")
            )
        for index, item in enumerate(items[:limit]):
            issues += item_issues(index, item, self.profile)
        if issues:
            self.state.stats["register.bad_request"] += 1
            return bad_request(issues)
        results = []
        now = datetime.now(UTC)
        with self.state.lock:
            for item in items:
                reasons = []
                if not is_valid_inss(item["ssin"]):
                    reasons.append(
                        {"code": "INVALID_SSIN", "description": "check digits do not match"}
                    )
                if parse_time(item["registrationDate"]) > now + FUTURE_TOLERANCE:  # type: ignore[operator]
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
        return json_response(200, {"items": results})

    def _lookup(self, client_id: str, kwargs: dict[str, Any]) -> Response:
        with self.state.lock:
            self.state.settle()
            reg = self.state.registrations.get(kwargs["reg_id"])
            body = reg.to_json() if reg else None
        if body is None:
            return problem_response(404, "resourceNotFound", "No such registration")
        return json_response(200, body)

    def _search(self, client_id: str, _: dict[str, Any]) -> Response:
        names, args = self.profile.search, request.args
        known = {getattr(names, f.name) for f in dataclasses.fields(names)} - {names.max_page_size}
        refused = [
            input_issue(
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
            return bad_request(refused)
        employer = args.get(names.enterprise_number) or args.get(names.foreign_vat_number)
        workplace = args.get(names.workplace)
        start, end = parse_time(args.get(names.date_from)), parse_time(args.get(names.date_to))
        issues = [
            input_issue("schemaViolation", "required", name, where="query")
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
            issues.append(
                input_issue("schemaViolation", "bad paging", names.page_size, where="query")
            )
        if issues:
            return bad_request(issues)
        ssin = args.get(names.ssin)
        with self.state.lock:
            self.state.settle()
            hits = [
                r.to_json()
                for r in self.state.search(str(employer), str(workplace))
                if (ssin is None or r.item["ssin"] == ssin)
                and start <= parse_time(r.item["registrationDate"]) <= end  # type: ignore[operator]
            ]
        hits.sort(key=lambda r: r["id"])
        chunk = hits[(page - 1) * size : page * size]
        return json_response(
            200, {"items": chunk, "total": len(hits), "page": page, "pageSize": size}
        )
