"""Strict CBOR and the signed envelope every message body travels in."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from siteclock.protocol.limits import (
    MAX_CBOR_DEPTH,
    MAX_EVENT_BODY_BYTES,
    BadSignature,
    MalformedMessage,
    UnknownKey,
)
from siteclock.protocol.signatures import ALGORITHMS, Signer

# --------------------------------------------------------------------------- envelope


def check_cbor(data: bytes, what: str, *, max_items: int) -> None:
    """Refuse, before any decoder sees them, CBOR bytes using anything this protocol does not:
    tags (the regular-expression tag alone costs up to 2 s of CPU in a general decoder, big
    numbers and dates arrive as tags too), floats, undefined and other simple values,
    indefinite lengths, more than ``max_items`` data items, nesting deeper than
    :data:`MAX_CBOR_DEPTH`, truncation and trailing bytes. Only a walk over the heads: no
    objects are built, so the cost is bounded by ``max_items``."""
    size, pos, items = len(data), 0, 0
    pending = [1]  # data items still expected at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= size:
            raise MalformedMessage(f"{what} is truncated CBOR")
        head = data[pos]
        pos += 1
        major, info = head >> 5, head & 31
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > size:
                raise MalformedMessage(f"{what} is truncated CBOR")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif major == 7 or info == 31:
            raise MalformedMessage(f"{what} uses CBOR indefinite lengths or breaks")
        else:
            raise MalformedMessage(f"{what} uses a reserved CBOR head")
        items += 1
        if items > max_items:
            raise MalformedMessage(f"{what} has more than {max_items} CBOR items")
        if major <= 1:
            continue
        if major <= 3:  # byte or text string
            if arg > size - pos:
                raise MalformedMessage(f"{what} is truncated CBOR")
            pos += arg
        elif major <= 5:  # array or map: every member needs at least one byte
            count = arg if major == 4 else 2 * arg
            if count > size - pos:
                raise MalformedMessage(f"{what} is truncated CBOR")
            if len(pending) > MAX_CBOR_DEPTH:
                raise MalformedMessage(f"{what} nests deeper than {MAX_CBOR_DEPTH}")
            pending.append(count)
        elif major == 6:
            raise MalformedMessage(f"{what} uses CBOR tag {arg}; this protocol uses none",
                                   reason="cbor_tag")  # fmt: skip
        elif info not in (20, 21, 22):  # false, true, null
            raise MalformedMessage(f"{what} uses a CBOR float or simple value")
    if pos != size:
        raise MalformedMessage(f"{what} has {size - pos} bytes after its CBOR value")


def _loads(data: bytes, what: str, *, max_items: int) -> Any:
    """Decode CBOR of this protocol's subset only (see :func:`check_cbor`)."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedMessage(f"{what} is not bytes")
    check_cbor(data, what, max_items=max_items)
    try:
        return cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many unrelated types on garbage
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None


def canonical(value: Any) -> bytes:
    """Deterministic CBOR of plain values (dict, list, str, int, bytes, bool, None)."""
    return cbor2.dumps(value, canonical=True)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Signed bytes as shipped: ``body`` is never decoded and re-encoded before verifying."""

    body: bytes
    alg: str
    kid: str
    sig: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed body: the link in a terminal's hash chain."""
        return hashlib.sha256(self.body).digest()

    def to_map(self) -> dict[str, Any]:
        return {"body": self.body, "alg": self.alg, "kid": self.kid, "sig": self.sig}

    @classmethod
    def from_map(cls, raw: Any) -> Envelope:
        if not isinstance(raw, Mapping):
            raise MalformedMessage("envelope is not a map")
        body, alg, kid, sig = (raw.get(k) for k in ("body", "alg", "kid", "sig"))
        if not isinstance(body, bytes) or not isinstance(sig, bytes):
            raise MalformedMessage("envelope body and sig must be byte strings")
        if not isinstance(alg, str) or not isinstance(kid, str):
            raise MalformedMessage("envelope alg and kid must be text")
        if len(body) > MAX_EVENT_BODY_BYTES or len(sig) > 128 or len(alg) > 16 or len(kid) > 64:
            raise MalformedMessage("envelope field too long", reason="too_large")
        return cls(body=body, alg=alg, kid=kid, sig=sig)

    def verify(self, keys: Mapping[str, bytes]) -> None:
        """Check the signature with the public key named by ``kid`` in ``keys``."""
        algorithm = ALGORITHMS.get(self.alg)
        if algorithm is None:
            raise BadSignature(f"unknown signature algorithm {self.alg!r}")
        public = keys.get(self.kid)
        if public is None:
            raise UnknownKey(f"no public key with id {self.kid!r}")
        algorithm.verify(public, self.sig, self.body)


def seal(body: bytes, signer: Signer) -> Envelope:
    return Envelope(body=body, alg=signer.alg, kid=signer.kid, sig=signer.sign(body))
