"""The provisioning requests a terminal sends and the gateway's answers (JSON over HTTPS).

This is the enrolment contract both sides import: the terminal side builds and signs these
requests, the gateway side parses and checks them. Parsing is shared by every request
(enrol, rebind, keys): anything malformed is an ``EnrolmentRefused("malformed", ...)`` with
HTTP status 400 that says which field is wrong.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from siteclock.protocol import (
    ProtocolError,
    canonical,
    check_terminal_id,
)
from siteclock.provisioning.shared.workplace import WorkplaceBinding, WorkplaceError


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


TOKEN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 symbols without I, O, 1 and 0, which a person reading a token aloud or from a phone
mixes up. Five bits each: 15 random bytes are 24 symbols."""


def format_token(raw: bytes) -> str:
    """Random bytes as a token to type: groups of four symbols of :data:`TOKEN_ALPHABET`."""
    number, bits = int.from_bytes(raw, "big"), len(raw) * 8
    count = -(-bits // 5)
    number <<= count * 5 - bits
    text = "".join(TOKEN_ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(count)))
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize_token(token: str) -> str:
    """What the installer typed -> the canonical token: case, spaces, dashes and dots do not
    matter (tokens issued before the I/O-free alphabet normalise the same way, so they hold)."""
    return "".join(c for c in (token or "").upper() if c.isalnum())


def hash_token(token: str) -> str:
    return hashlib.sha256(normalize_token(token).encode()).hexdigest()


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


def _unb64(raw: dict[str, Any], name: str) -> bytes:
    return unb64(raw.get(name), name)


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise EnrolmentRefused("malformed", f"{name} must be non-empty text", status=400)
    return value


@dataclass(frozen=True)
class RebindRequest:
    terminal_id: str
    token: str
    workplace: WorkplaceBinding
    reason: str
    confirm: bool
    kid: str = ""
    signature: bytes = b""

    def signed_body(self) -> bytes:
        return signed_bytes(
            "rebind",
            {
                "terminal": self.terminal_id,
                "token_hash": hash_token(self.token),
                "workplace": self.workplace.reference,
                "reason": self.reason,
                "confirm": self.confirm,
                "kid": self.kid,
            },
        )

    def signed_by(self, signer: Any) -> RebindRequest:
        base = RebindRequest(
            self.terminal_id, self.token, self.workplace, self.reason, self.confirm, signer.kid
        )
        return RebindRequest(
            base.terminal_id, base.token, base.workplace, base.reason, base.confirm, base.kid,
            signer.sign(base.signed_body()),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "token": self.token,
            "workplace": self.workplace.to_map(),
            "reason": self.reason,
            "confirm": self.confirm,
            "kid": self.kid,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_json(cls, raw: Any) -> RebindRequest:
        raw = request_map(raw)
        terminal_id, binding = request_binding(raw)
        return cls(
            terminal_id,
            _text(raw, "token"),
            binding,
            _text(raw, "reason"),
            raw.get("confirm") is True,
            _text(raw, "kid"),
            _unb64(raw, "signature"),
        )


@dataclass(frozen=True)
class KeyRequest:
    """Add a key (``action="add"``, ``public_key`` set, ``new_signature`` by the new key) or
    revoke one (``action="revoke"``, ``revoke_kid`` set). Signed by ``kid``, a current key."""

    terminal_id: str
    action: str
    kid: str = ""
    public_key: bytes = b""
    alg: str = "ed25519"
    revoke_kid: str = ""
    signature: bytes = b""
    new_signature: bytes = b""

    def signed_body(self) -> bytes:
        return signed_bytes(
            f"key-{self.action}",
            {
                "terminal": self.terminal_id,
                "kid": self.kid,
                "public_key": self.public_key,
                "alg": self.alg,
                "revoke_kid": self.revoke_kid,
            },
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "action": self.action,
            "kid": self.kid,
            "public_key": b64(self.public_key),
            "alg": self.alg,
            "revoke_kid": self.revoke_kid,
            "signature": b64(self.signature),
            "new_signature": b64(self.new_signature),
        }

    @classmethod
    def from_json(cls, raw: Any) -> KeyRequest:
        raw = request_map(raw)
        terminal_id = request_terminal_id(raw)
        action = _text(raw, "action")
        if action not in ("add", "revoke"):
            raise EnrolmentRefused("malformed", "action must be 'add' or 'revoke'", status=400)
        return cls(
            terminal_id,
            action,
            _text(raw, "kid"),
            _unb64(raw, "public_key"),
            str(raw.get("alg", "ed25519")),
            str(raw.get("revoke_kid", "")),
            _unb64(raw, "signature"),
            _unb64(raw, "new_signature"),
        )


def sign_key_request(
    terminal_id: str,
    *,
    current: Any,
    add: Any = None,
    revoke_kid: str = "",
) -> KeyRequest:
    """Build a signed :class:`KeyRequest`: add ``add`` (a signer) or revoke ``revoke_kid``."""
    if add is not None:
        req = KeyRequest(terminal_id, "add", current.kid, add.public_key_bytes(), add.alg)
        body = req.signed_body()
        return KeyRequest(
            req.terminal_id, req.action, req.kid, req.public_key, req.alg, "",
            current.sign(body), add.sign(body),
        )  # fmt: skip
    req = KeyRequest(terminal_id, "revoke", current.kid, revoke_kid=revoke_kid)
    signature = current.sign(req.signed_body())
    return KeyRequest(req.terminal_id, req.action, req.kid, b"", req.alg, revoke_kid, signature)
