"""Gateway side of enrolment: one-time tokens, and turning a terminal's public key into a member.

An employer creates an **enrolment token** for one workplace (``siteclock provision token
create``) and hands it to the installer. The token is the only secret the installer carries:

* it is random (120 bits), shown once, and stored **hashed** (SHA-256): a stolen database gives
  no usable token;
* it expires (default 24 h), is **single use**, and is **scoped** to one Declaration of Works:
  a terminal enrolled with it can only be bound to that workplace.

A terminal enrols by sending its id, workplace, public key and a signature with the matching
private key over the request (proof that it holds the key; the private key never leaves the
terminal). :meth:`EnrolmentService.enrol` then, in this order:

1. claims the token for this (terminal, key) in one SQLite transaction;
2. registers the terminal's key and binding in :class:`gateway.terminals.TerminalRegistry`
   (and the workplace's location in :class:`gateway.registry.Registry` when the site has none
   yet: the first location wins, a different one from a later terminal is kept aside as a
   conflict for the employer, never written over the site's, see :func:`record_location`);
3. gives the terminal a fresh broker password (Mosquitto ``$7$`` line in the password file) and
   makes the running broker reread it (SIGHUP, no restart).

If the answer is lost (a crash, a cut cable), the terminal asks again with the same token and
key: the same claimant is recognised, steps 2-3 are completed or repeated, and a new password
replaces the one that never arrived. Any other reuse of the token is refused. Every refusal has a
short reason (``expired``, ``used``, ``wrong_workplace``...) that is counted and logged; a
caller without a valid token (or key) is told only ``401 unauthorized``: nothing about whether
a token or a terminal exists, where it is bound or in which state.

Public keys are checked before anything is stored (:func:`check_public_key`): an Ed25519 key
of small or mixed order, or an ES256 point off the curve, is refused.

Example::

    tokens = TokenStore(db)
    issued = tokens.create("1Y1003SQ5VSSZ", ttl_s=86400, created_by="employer")
    service = EnrolmentService(tokens, TerminalRegistry(db), BrokerAccounts(passwd, reload),
                               endpoint=BrokerEndpoint("gw.site.local", 8883, ca_pem))
    result = service.enrol(request)   # EnrolmentResult with the broker password
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.gateway.broker import (
    generate_password,
    hash_password,
    password_file_lock,
    read_password_file,
    write_password_file,
)
from siteclock.gateway.broker import reload as reload_broker
from siteclock.gateway.db import GatewayDB, open_gateway_db
from siteclock.gateway.terminals import ACTIVE, TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import (
    ALGORITHMS,
    ProtocolError,
    canonical,
    check_terminal_id,
    key_id,
)
from siteclock.provisioning.ed25519_points import ed25519_key_problem
from siteclock.provisioning.workplace import WorkplaceBinding, WorkplaceError, parse_reference

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 24 * 3600
RETRY_GRACE_S = 3600
"""After its claim, the claimant may repeat its enrolment this long even past expiry."""
TOKEN_BYTES = 15  # 120 bits -> 24 base32 characters, typed in six groups of four

# --------------------------------------------------------------------------- errors


class EnrolmentRefused(Exception):
    """An enrolment (or lifecycle) request is refused. ``reason`` is short and countable;
    the message says what the installer can do about it."""

    def __init__(self, reason: str, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status

    @property
    def public_reason(self) -> str:
        """What the caller is told: the reason, except ``unauthorized`` for every 401."""
        return "unauthorized" if self.status == 401 else self.reason


UNAUTHORIZED_DETAIL = (
    "not authorised: the token or key is not valid (unknown, expired or already used); "
    "ask the employer for a new enrolment token"
)


def unauthorized(reason: str) -> EnrolmentRefused:
    """A refusal that tells the caller nothing: ``reason`` is only counted and logged here."""
    return EnrolmentRefused(reason, UNAUTHORIZED_DETAIL, status=401)


# --------------------------------------------------------------------------- tokens


def format_token(raw: bytes) -> str:
    text = base64.b32encode(raw).decode().rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize_token(token: str) -> str:
    """What the installer typed -> the canonical token (case, spaces and dashes do not matter)."""
    return "".join(c for c in (token or "").upper() if c.isalnum())


def hash_token(token: str) -> str:
    return hashlib.sha256(normalize_token(token).encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    """The secret: shown to the employer once, never stored."""
    workplace: str
    expires_ns: int
    token_hash: str


@dataclass(frozen=True)
class TokenInfo:
    token_hash: str
    workplace: str
    created_ns: int
    expires_ns: int
    created_by: str
    note: str
    used_ns: int | None
    used_by: str | None


class TokenStore:
    """Enrolment tokens on the gateway database (:mod:`siteclock.gateway.db`)."""

    def __init__(
        self, path: Path | str | GatewayDB, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._clock = clock
        self._db, self._owned = open_gateway_db(path)

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def create(
        self,
        workplace: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        created_by: str = "",
        note: str = "",
    ) -> IssuedToken:
        """A new single-use token for ``workplace``, valid ``ttl_s`` seconds."""
        workplace = parse_reference(workplace)
        if not 60 <= ttl_s <= 30 * 86400:
            raise ValueError("a token lives between 1 minute and 30 days")
        token = format_token(secrets.token_bytes(TOKEN_BYTES))
        now = self._clock()
        expires = now + int(ttl_s * 1e9)
        digest = hash_token(token)
        self._db.add_token(digest, workplace, now, expires, created_by, note)
        return IssuedToken(token, workplace, expires, digest)

    def info(self, token: str) -> TokenInfo | None:
        row = self._db.token(hash_token(token))
        return TokenInfo(*row) if row else None

    def list(self) -> list[TokenInfo]:
        return [TokenInfo(*r) for r in self._db.tokens()]

    def check(self, token: str, *, terminal_id: str, kid: str, workplace: str) -> None:
        """Raise what :meth:`claim` would, without claiming: the caller's right to hear more."""
        row = self._db.token_claim(hash_token(token))
        self._check_claim(row, self._clock(), terminal_id, kid, workplace)

    def record_location_conflict(self, workplace: str, terminal_id: str, location: Any) -> None:
        """Keep a location a terminal gave that differs from the site's (for the employer)."""
        coords, address = location.coordinates, location.address
        self._db.record_location_conflict(
            workplace, terminal_id, self._clock(),
            coords.latitude if coords else None, coords.longitude if coords else None,
            json.dumps(address.to_ciao()) if address else None,
        )  # fmt: skip

    def location_conflicts(self, workplace: str) -> list[dict[str, Any]]:
        """Locations terminals gave for ``workplace`` that were not applied, oldest first."""
        rows = self._db.location_conflicts(workplace)
        return [
            {"terminal": r[0], "at_ns": r[1], "latitude": r[2], "longitude": r[3],
             "address": json.loads(r[4]) if r[4] else None}
            for r in rows
        ]  # fmt: skip

    def claim(self, token: str, *, terminal_id: str, kid: str, workplace: str) -> bool:
        """Use the token for (terminal, key) at ``workplace``.

        Returns True on the first claim, False when the same claimant repeats (a retry after a
        lost answer). Raises :class:`EnrolmentRefused` otherwise.
        """
        digest = hash_token(token)
        now = self._clock()
        with self._db.atomic():
            row = self._db.token_claim(digest)
            first = self._check_claim(row, now, terminal_id, kid, workplace)
            if first:
                self._db.claim_token(digest, terminal_id, kid, now)
        return first

    @staticmethod
    def _check_claim(row: Any, now: int, terminal_id: str, kid: str, workplace: str) -> bool:
        if row is None:
            raise unauthorized("unknown_token")
        scope, expires, used_ns, used_by, used_kid = row
        if used_ns is not None:
            same = used_by == terminal_id and used_kid == kid
            if same and now < max(expires, used_ns + int(RETRY_GRACE_S * 1e9)):
                return False
            raise unauthorized("used")
        if now >= expires:
            raise unauthorized("expired")
        if scope != workplace:  # the caller holds a valid token: it may learn its scope
            raise EnrolmentRefused(
                "wrong_workplace",
                f"this enrolment token is for workplace {scope}, not {workplace}",
            )
        return True


# --------------------------------------------------------------------------- broker accounts


def pid_file_reloader(pid_file: Path) -> Callable[[], None]:
    """Reload a Mosquitto whose pid is in ``pid_file`` (its ``pid_file`` setting) by SIGHUP."""

    def reload() -> None:
        reload_broker(int(Path(pid_file).read_text().strip()))

    return reload


class BrokerAccounts:
    """Adds, replaces and removes one user's line in Mosquitto's password file, then reloads.

    Only this user's line changes; the others keep their hashes. A lock file serialises writers
    across processes (the enrolment server and an employer's CLI on the same host). ``reload``
    makes the running broker reread the file (SIGHUP: new logins use it at once, no restart).
    """

    def __init__(self, password_file: Path, reload: Callable[[], None]) -> None:
        self.password_file = Path(password_file)
        self._reload = reload

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        with password_file_lock(self.password_file):  # the lock broker-config takes too
            users = read_password_file(self.password_file)
            yield users
            write_password_file(self.password_file, users)

    def set_password(self, user: str) -> str:
        """Give ``user`` a new random password (old one stops working); returns it."""
        password = generate_password()
        with self._locked() as users:
            users[user] = hash_password(password)
        self._reload()
        return password

    def remove(self, user: str) -> bool:
        """Remove ``user``: the broker refuses its next login. Returns whether it existed."""
        with self._locked() as users:
            existed = users.pop(user, None) is not None
        self._reload()
        return existed

    def has(self, user: str) -> bool:
        return user in read_password_file(self.password_file)


# --------------------------------------------------------------------------- requests


# Parsing shared by every request a terminal sends (enrolment here, rebind and keys in
# provisioning.lifecycle): anything malformed is an ``EnrolmentRefused("malformed", ...)`` with
# HTTP status 400 that says which field is wrong.


def b64(data: bytes) -> str:
    """Bytes as base64 text, for a JSON request or answer."""
    return base64.b64encode(data).decode()


def unb64(value: Any, what: str) -> bytes:
    """The bytes of base64 text ``value`` (the field named ``what``), or a 400 refusal."""
    if not isinstance(value, str):
        raise EnrolmentRefused("malformed", f"{what} must be base64 text", status=400)
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise EnrolmentRefused("malformed", f"{what} is not valid base64", status=400) from None


def request_map(raw: Any) -> dict[str, Any]:
    """A request's decoded JSON body, refused unless it is an object."""
    if not isinstance(raw, dict):
        raise EnrolmentRefused("malformed", "request body must be a JSON object", status=400)
    return raw


def request_terminal_id(raw: dict[str, Any]) -> str:
    """The request's valid ``terminal_id``, or a 400 refusal."""
    try:
        return check_terminal_id(raw.get("terminal_id"))  # type: ignore[arg-type]
    except ProtocolError as exc:
        raise EnrolmentRefused("malformed", str(exc), status=400) from None


def request_binding(raw: dict[str, Any]) -> tuple[str, WorkplaceBinding]:
    """The request's valid ``terminal_id`` and ``workplace`` binding, or a 400 refusal
    (the workplace is checked first, so its error is the one reported when both are wrong)."""
    try:
        binding = WorkplaceBinding.from_map(raw.get("workplace"))  # type: ignore[arg-type]
    except (WorkplaceError, ProtocolError) as exc:
        raise EnrolmentRefused("malformed", str(exc), status=400) from None
    return request_terminal_id(raw), binding


def signed_bytes(purpose: str, body: Mapping[str, Any]) -> bytes:
    """What a terminal signs to prove it holds its key: the purpose and the request's fields
    (token hashed, so the signature never helps anyone learn it)."""
    return canonical({"purpose": f"siteclock-{purpose}-v1", **dict(body)})


@dataclass(frozen=True)
class EnrolmentRequest:
    """What a terminal sends to enrol (JSON over HTTPS)."""

    token: str
    terminal_id: str
    workplace: WorkplaceBinding
    public_key: bytes
    alg: str = "ed25519"
    signature: bytes = b""

    def signed_body(self) -> bytes:
        return signed_bytes(
            "enrol",
            {
                "token_hash": hash_token(self.token),
                "terminal": self.terminal_id,
                "workplace": self.workplace.reference,
                "public_key": self.public_key,
                "alg": self.alg,
            },
        )

    def signed_by(self, signer: Any) -> EnrolmentRequest:
        unsigned = EnrolmentRequest(
            self.token, self.terminal_id, self.workplace, signer.public_key_bytes(), signer.alg
        )
        return EnrolmentRequest(
            unsigned.token, unsigned.terminal_id, unsigned.workplace, unsigned.public_key,
            unsigned.alg, signer.sign(unsigned.signed_body()),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "terminal_id": self.terminal_id,
            "workplace": self.workplace.to_map(),
            "public_key": b64(self.public_key),
            "alg": self.alg,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_json(cls, raw: Any) -> EnrolmentRequest:
        raw = request_map(raw)
        terminal_id, binding = request_binding(raw)
        token, alg = raw.get("token"), raw.get("alg", "ed25519")
        if not isinstance(token, str) or not isinstance(alg, str):
            raise EnrolmentRefused("malformed", "token and alg must be text", status=400)
        return cls(
            token=token,
            terminal_id=terminal_id,
            workplace=binding,
            public_key=unb64(raw.get("public_key"), "public_key"),
            alg=alg,
            signature=unb64(raw.get("signature"), "signature"),
        )


def check_public_key(alg: str, public_key: bytes) -> None:
    """Refuse a public key that is not a sound key of ``alg`` (400 ``weak_key``).

    Ed25519: a canonical encoding of a point of the prime-order subgroup (small-order points
    verify signatures of chosen messages for anyone, mixed-order ones behave differently in
    different verifiers). ES256: an uncompressed point on P-256 (the curve has cofactor 1)."""
    if alg == "ed25519":
        problem = ed25519_key_problem(public_key)
    elif alg == "es256":
        problem = _es256_key_problem(public_key)
    else:
        raise EnrolmentRefused("malformed", f"unknown key algorithm {alg!r}", status=400)
    if problem:
        raise EnrolmentRefused("weak_key", f"public key refused: {problem}", status=400)


def _es256_key_problem(public_key: bytes) -> str | None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if len(public_key) != 65 or public_key[0] != 4:
        return "an ES256 key is a 65-byte uncompressed P-256 point"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    except ValueError:
        return "not a point on P-256"
    return None


def verify_proof(alg: str, public_key: bytes, signature: bytes, body: bytes) -> None:
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        raise EnrolmentRefused("malformed", f"unknown key algorithm {alg!r}", status=400)
    try:
        algorithm.verify(public_key, signature, body)
    except ProtocolError:
        raise EnrolmentRefused(
            "bad_proof", "the request is not signed by the key it presents"
        ) from None


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class BrokerEndpoint:
    """How terminals reach the broker: written into their configuration."""

    host: str
    port: int
    ca_pem: str


@dataclass(frozen=True)
class EnrolmentResult:
    terminal_id: str
    workplace: str
    kid: str
    mqtt_username: str
    mqtt_password: str
    endpoint: BrokerEndpoint
    gateway_keys: dict[str, str] = field(default_factory=dict)
    """Roster-signing public keys, ``{kid: hex}`` (the format ``terminal.uplink`` reads)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "workplace": self.workplace,
            "kid": self.kid,
            "mqtt": {
                "host": self.endpoint.host,
                "port": self.endpoint.port,
                "username": self.mqtt_username,
                "password": self.mqtt_password,
                "ca_pem": self.endpoint.ca_pem,
            },
            "gateway_keys": dict(self.gateway_keys),
        }

    @classmethod
    def from_json(cls, raw: Any) -> EnrolmentResult:
        try:
            mqtt = raw["mqtt"]
            return cls(
                terminal_id=check_terminal_id(raw["terminal_id"]),
                workplace=str(raw["workplace"]),
                kid=str(raw["kid"]),
                mqtt_username=str(mqtt["username"]),
                mqtt_password=str(mqtt["password"]),
                endpoint=BrokerEndpoint(str(mqtt["host"]), int(mqtt["port"]), str(mqtt["ca_pem"])),
                gateway_keys={str(k): str(v) for k, v in dict(raw.get("gateway_keys", {})).items()},
            )
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise ValueError(f"enrolment answer is malformed: {exc}") from None


class EnrolmentService:
    """The enrolment endpoint's logic, independent of HTTP (so it is testable without it)."""

    def __init__(
        self,
        tokens: TokenStore,
        terminals: TerminalRegistry,
        broker: BrokerAccounts,
        *,
        endpoint: BrokerEndpoint,
        gateway_keys: Mapping[str, str] | None = None,
        workplaces: Any = None,
    ) -> None:
        """``workplaces``: a :class:`gateway.registry.Registry` to record the workplace's
        location in (CIaO needs it with every registration); optional."""
        self.tokens = tokens
        self.terminals = terminals
        self.broker = broker
        self.endpoint = endpoint
        self.gateway_keys = dict(gateway_keys or {})
        self.workplaces = workplaces
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record_location(self, binding: WorkplaceBinding, terminal_id: str) -> None:
        """Give the workplace the location a terminal's installer typed, if it has none yet.

        The location is the site's, shared by all its terminals and sent to the NSSO with every
        registration: one terminal's installer (or a stolen token) must not move it for all.
        The first location wins; a different one is kept in ``enrol_location_conflicts``, logged
        and left for the employer (:meth:`TokenStore.location_conflicts`)."""
        if self.workplaces is None or (binding.coordinates is None and binding.address is None):
            return
        coords, address = binding.coordinates, binding.address
        given = {
            "latitude": round(coords.latitude, 6) if coords else None,
            "longitude": round(coords.longitude, 6) if coords else None,
            "address": address.to_ciao() if address else None,
        }
        current = self.workplaces.workplace(binding.reference)
        if current is None:
            self.workplaces.add_workplace(binding.reference, **given)
            return
        kept = {
            "latitude": round(current.latitude, 6) if current.latitude is not None else None,
            "longitude": round(current.longitude, 6) if current.longitude is not None else None,
            "address": current.address,
        }
        differs = any(given[k] is not None and given[k] != kept[k] for k in given)
        if differs:
            self.tokens.record_location_conflict(binding.reference, terminal_id, binding)
            self.counters["location_conflict"] += 1
            log.warning(
                "terminal gave a different workplace location; the site's is kept",
                extra=fields(terminal=terminal_id, workplace=binding.reference),
            )

    def refuse(self, exc: EnrolmentRefused, terminal: str | None) -> None:
        self.counters[exc.reason] += 1
        log.warning("enrolment refused", extra=fields(terminal=terminal, reason=exc.reason))

    def enrol(self, request: EnrolmentRequest) -> EnrolmentResult:
        try:
            with self._lock:
                result = self._enrol(request)
        except EnrolmentRefused as exc:
            self.refuse(exc, request.terminal_id)
            raise
        self.counters["enrolled"] += 1
        log.info(
            "terminal enrolled",
            extra=fields(terminal=result.terminal_id, workplace=result.workplace, kid=result.kid),
        )
        return result

    def _enrol(self, req: EnrolmentRequest) -> EnrolmentResult:
        kid = key_id(req.public_key)
        workplace = req.workplace.reference
        # The token first: without a valid one the caller learns nothing about any terminal.
        self.tokens.check(req.token, terminal_id=req.terminal_id, kid=kid, workplace=workplace)
        check_public_key(req.alg, req.public_key)
        verify_proof(req.alg, req.public_key, req.signature, req.signed_body())
        existing = self.terminals.get(req.terminal_id)
        if existing is not None:
            # Checked before the token is claimed: a clash must not burn the installer's token.
            same = existing.workplace == workplace and kid in existing.keys
            if not same or existing.status != ACTIVE:
                raise EnrolmentRefused(
                    "terminal_exists",
                    f"terminal id {req.terminal_id!r} is already enrolled; choose another id, "
                    "or use rebind / rotate-key on that terminal",
                    status=409,
                )
        self.tokens.claim(req.token, terminal_id=req.terminal_id, kid=kid, workplace=workplace)
        if existing is None:
            self.terminals.register(
                req.terminal_id, workplace, public_key=req.public_key, alg=req.alg
            )
        self.record_location(req.workplace, req.terminal_id)
        password = self.broker.set_password(req.terminal_id)
        return EnrolmentResult(
            terminal_id=req.terminal_id,
            workplace=workplace,
            kid=kid,
            mqtt_username=req.terminal_id,
            mqtt_password=password,
            endpoint=self.endpoint,
            gateway_keys=self.gateway_keys,
        )
