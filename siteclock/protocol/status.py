"""Terminal status (heartbeat JSON) and the signed clock proof it carries."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siteclock.protocol.envelope import Envelope, _loads, canonical, seal
from siteclock.protocol.limits import (
    MAX_JSON_INT_DIGITS,
    MAX_STATUS_BYTES,
    MAX_STATUS_DEPTH,
    MAXERROR_US_RANGE,
    NS_RANGE,
    PROTOCOL_VERSION,
    MalformedMessage,
    ProtocolError,
    TooLarge,
    check_int,
    check_terminal_id,
    check_text,
)
from siteclock.protocol.signatures import Signer

# --------------------------------------------------------------------------- status


def encode_status(status: Mapping[str, Any]) -> bytes:
    """Retained JSON on the status topic (heartbeat and Last Will): readable by any dashboard.

    Carries ``state`` ("online"/"offline") and, when online, queue_depth, oldest_unsent_age_s,
    clock, reader, disk_free_mb, version, uptime_s, boot_id, boot_ns, wall_ns, alerts and
    roster_version (the roster held; optional, older terminals omit it), and, when the
    clock is synced, a signed ``clock_proof`` (see :class:`ClockProof`): only that proof lets the
    gateway correct events taken before a clock sync in the same boot.
    """
    return json.dumps(dict(status), sort_keys=True, separators=(",", ":")).encode()


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise MalformedMessage(
            f"status holds a number of {len(text)} digits", reason="out_of_range"
        )
    return int(text)


def _json_constant(name: str) -> Any:
    raise MalformedMessage(f"status holds {name}, which is not JSON")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def decode_status(payload: bytes) -> dict[str, Any]:
    """Parse a status message within its limits: at most :data:`MAX_STATUS_BYTES` (checked
    before parsing), nesting at most :data:`MAX_STATUS_DEPTH`, integers of at most 19 digits,
    no NaN or Infinity. Any breach is a :class:`ProtocolError`, never another exception."""
    if len(payload) > MAX_STATUS_BYTES:
        raise TooLarge(f"status of {len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
    try:
        raw = json.loads(payload, parse_int=_json_int, parse_constant=_json_constant)
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"status is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("state") not in ("online", "offline"):
        raise MalformedMessage("status needs state 'online' or 'offline'")
    if _depth(raw) > MAX_STATUS_DEPTH:
        raise MalformedMessage(f"status nests deeper than {MAX_STATUS_DEPTH}")
    return raw


# --------------------------------------------------------------------------- clock proof

CLOCK_PROOF_FIELD = "clock_proof"
"""The status field holding a :class:`ClockProof` envelope, CBOR then base64 (JSON is text)."""


@dataclass(frozen=True, slots=True)
class ClockProof:
    """A synced clock reading, signed by the terminal: ``wall_ns`` was true at ``boot_ns`` of
    boot ``boot_id``. The gateway corrects the boot's unsynced taps with it, so it carries a
    signature like an event: an unsigned heartbeat cannot move a terminal's taps in time.
    Its body has ``type: "clock"`` and no event field, so it can never pass for an event."""

    terminal_id: str
    boot_id: str
    boot_ns: int
    wall_ns: int
    maxerror_us: int

    def to_body(self) -> bytes:
        return canonical({
            "v": PROTOCOL_VERSION, "type": "clock", "terminal": self.terminal_id,
            "boot_id": self.boot_id, "boot_ns": self.boot_ns, "wall_ns": self.wall_ns,
            "maxerror_us": self.maxerror_us,
        })  # fmt: skip

    @classmethod
    def from_body(cls, body: bytes) -> ClockProof:
        raw = _loads(body, "clock proof", max_items=32)
        fields = {"v", "type", "terminal", "boot_id", "boot_ns", "wall_ns", "maxerror_us"}
        if not isinstance(raw, Mapping) or set(raw) != fields:
            raise MalformedMessage(f"clock proof must have exactly {sorted(fields)}")
        if raw["v"] != PROTOCOL_VERSION or raw["type"] != "clock":
            raise MalformedMessage("clock proof is not a version 1 clock body")
        return cls(
            terminal_id=check_terminal_id(raw["terminal"]),
            boot_id=check_text("clock proof boot_id", raw["boot_id"]),
            boot_ns=check_int("clock proof boot_ns", raw["boot_ns"], NS_RANGE),
            wall_ns=check_int("clock proof wall_ns", raw["wall_ns"], NS_RANGE),
            maxerror_us=check_int("clock proof maxerror_us", raw["maxerror_us"], MAXERROR_US_RANGE),
        )


def attach_clock_proof(status: dict[str, Any], terminal_id: str, signer: Signer) -> dict[str, Any]:
    """The status with a signed :class:`ClockProof` of its own clock fields when its clock is
    synced (the terminal's side); unchanged otherwise."""
    clock = status.get("clock")
    if not isinstance(clock, Mapping) or clock.get("synced") is not True:
        return status
    try:
        proof = ClockProof(
            terminal_id, status["boot_id"], status["boot_ns"], status["wall_ns"],
            clock.get("maxerror_us", -1),
        )  # fmt: skip
    except KeyError:
        return status
    envelope = seal(proof.to_body(), signer)
    return {**status, CLOCK_PROOF_FIELD: base64.b64encode(canonical(envelope.to_wire())).decode()}


def verify_clock_proof(
    status: Mapping[str, Any], terminal_id: str, keys: Mapping[str, bytes]
) -> ClockProof | None:
    """The status's clock proof, checked (signature with ``keys``, terminal, ranges); None when it
    carries none (a terminal from before proofs: its heartbeat is kept, it corrects nothing)."""
    text = status.get(CLOCK_PROOF_FIELD)
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 1024:
        raise MalformedMessage("clock_proof must be base64 text", reason="bad_clock_proof")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("clock_proof is not base64", reason="bad_clock_proof") from None
    envelope = Envelope.from_wire(_loads(raw, "clock proof envelope", max_items=16))
    envelope.verify(keys)
    proof = ClockProof.from_body(envelope.body)
    if proof.terminal_id != terminal_id:
        raise MalformedMessage("clock proof names another terminal", reason="wrong_terminal")
    return proof
