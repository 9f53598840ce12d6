"""Strict CBOR and the signed envelope every message body travels in."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
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


LEGACY_ENVELOPE = 1
"""Envelope version 1: the map ``{body, alg, kid, sig}``, signed over the body bytes alone."""
COSE_SIGN1_ENVELOPE = 2
"""Envelope version 2: an RFC 9052 COSE_Sign1 ``[protected, unprotected, payload, signature]``,
signed over its ``Sig_structure``, so an inspector's own COSE tools can check it."""
ENVELOPE_VERSIONS = (LEGACY_ENVELOPE, COSE_SIGN1_ENVELOPE)
COSE_SIGN1_TAG = 18
"""The CBOR tag of a COSE_Sign1 message (RFC 9052 section 2). The wire carries the untagged
form (this protocol's CBOR uses no tags); an evidence export carries the tagged one."""
COSE_ALG_IDS = {"ed25519": -8, "es256": -7}
"""Our algorithm names and their COSE identifiers (IANA: EdDSA -8, ES256 -7)."""
_COSE_ALG_NAMES = {v: k for k, v in COSE_ALG_IDS.items()}
_HEADER_ALG, _HEADER_KID = 1, 4  # COSE header labels


@dataclass(frozen=True, slots=True)
class Envelope:
    """Signed bytes as shipped: ``body`` is never decoded and re-encoded before verifying.

    ``version`` says what the signature covers: the body (1, older terminals) or the COSE
    ``Sig_structure`` around it (2). ``alg`` and ``kid`` are enough to rebuild a version 2
    protected header byte for byte (only the deterministic encoding is accepted), so a store
    keeps the same four columns plus the version.
    """

    body: bytes
    alg: str
    kid: str
    sig: bytes
    version: int = LEGACY_ENVELOPE

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed body: the link in a terminal's hash chain."""
        return hashlib.sha256(self.body).digest()

    def protected_header(self) -> bytes:
        """The COSE protected header: ``{1: alg, 4: kid}`` in deterministic CBOR."""
        alg_id = COSE_ALG_IDS.get(self.alg)
        if alg_id is None:
            raise ValueError(f"algorithm {self.alg!r} has no COSE identifier")
        return canonical({_HEADER_ALG: alg_id, _HEADER_KID: self.kid.encode("ascii")})

    def signed_bytes(self) -> bytes:
        """What the signature is over: the body (version 1) or the COSE ``Sig_structure``
        ``["Signature1", protected, external_aad = b"", payload]`` (version 2)."""
        if self.version == LEGACY_ENVELOPE:
            return self.body
        return canonical(["Signature1", self.protected_header(), b"", self.body])

    def to_wire(self) -> dict[str, Any] | list[Any]:
        """The envelope as it travels inside a CBOR message: a map (1) or an untagged
        COSE_Sign1 array (2)."""
        if self.version == LEGACY_ENVELOPE:
            return {"body": self.body, "alg": self.alg, "kid": self.kid, "sig": self.sig}
        return [self.protected_header(), {}, self.body, self.sig]

    def to_cose_sign1(self) -> bytes:
        """The tagged COSE_Sign1 message (version 2 only), for tools outside this protocol."""
        if self.version != COSE_SIGN1_ENVELOPE:
            raise ValueError("only a version 2 envelope is a COSE_Sign1 message")
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, self.to_wire()))

    @classmethod
    def from_wire(cls, raw: Any) -> Envelope:
        """Either wire form; the shape says which version it is."""
        if isinstance(raw, list):
            return cls._from_cose(raw)
        if not isinstance(raw, Mapping):
            raise MalformedMessage("envelope is neither a map nor a COSE_Sign1 array")
        body, alg, kid, sig = (raw.get(k) for k in ("body", "alg", "kid", "sig"))
        if not isinstance(body, bytes) or not isinstance(sig, bytes):
            raise MalformedMessage("envelope body and sig must be byte strings")
        if not isinstance(alg, str) or not isinstance(kid, str):
            raise MalformedMessage("envelope alg and kid must be text")
        return cls._bounded(body, alg, kid, sig, LEGACY_ENVELOPE)

    @classmethod
    def from_cose_sign1(cls, data: bytes) -> Envelope:
        """Parse a tagged (or untagged) COSE_Sign1 message made by :meth:`to_cose_sign1`."""
        if data[:1] == bytes([0xC0 | COSE_SIGN1_TAG]):  # tag 18 fits in the initial byte
            data = data[1:]
        return cls._from_cose(_loads(data, "COSE_Sign1 message", max_items=16))

    @classmethod
    def _from_cose(cls, raw: list[Any]) -> Envelope:
        if len(raw) != 4:
            raise MalformedMessage("COSE_Sign1 must have 4 members")
        protected, unprotected, body, sig = raw
        if not all(isinstance(x, bytes) for x in (protected, body, sig)):
            raise MalformedMessage("COSE_Sign1 protected, payload and signature must be bytes")
        if unprotected != {}:
            raise MalformedMessage("COSE_Sign1 unprotected header must be empty")
        if len(protected) > 96:
            raise MalformedMessage("COSE_Sign1 protected header too long", reason="too_large")
        header = _loads(protected, "COSE protected header", max_items=8)
        if not isinstance(header, Mapping) or set(header) != {_HEADER_ALG, _HEADER_KID}:
            raise MalformedMessage("COSE protected header must hold exactly alg (1) and kid (4)")
        alg_id, kid = header[_HEADER_ALG], header[_HEADER_KID]
        alg = _COSE_ALG_NAMES.get(alg_id) if type(alg_id) is int else None
        if alg is None:
            raise MalformedMessage(f"COSE algorithm {alg_id!r} is not supported")
        if not isinstance(kid, bytes) or not kid.isascii():
            raise MalformedMessage("COSE kid must be ASCII bytes")
        envelope = cls._bounded(body, alg, kid.decode("ascii"), sig, COSE_SIGN1_ENVELOPE)
        if envelope.protected_header() != protected:
            raise MalformedMessage("COSE protected header is not in deterministic encoding")
        return envelope

    @classmethod
    def _bounded(cls, body: bytes, alg: str, kid: str, sig: bytes, version: int) -> Envelope:
        if len(body) > MAX_EVENT_BODY_BYTES or len(sig) > 128 or len(alg) > 16 or len(kid) > 64:
            raise MalformedMessage("envelope field too long", reason="too_large")
        return cls(body=body, alg=alg, kid=kid, sig=sig, version=version)

    def verify(self, keys: Mapping[str, bytes]) -> None:
        """Check the signature with the public key named by ``kid`` in ``keys``."""
        algorithm = ALGORITHMS.get(self.alg)
        if algorithm is None:
            raise BadSignature(f"unknown signature algorithm {self.alg!r}")
        if self.version not in ENVELOPE_VERSIONS:
            raise BadSignature(f"unknown envelope version {self.version!r}")
        public = keys.get(self.kid)
        if public is None:
            raise UnknownKey(f"no public key with id {self.kid!r}")
        algorithm.verify(public, self.sig, self.signed_bytes())


def seal(body: bytes, signer: Signer, *, version: int = LEGACY_ENVELOPE) -> Envelope:
    """Sign ``body``. Events are sealed as COSE_Sign1 (version 2); rosters and clock proofs
    keep version 1 (their readers are this project's own code only)."""
    unsigned = Envelope(body=body, alg=signer.alg, kid=signer.kid, sig=b"", version=version)
    return replace(unsigned, sig=signer.sign(unsigned.signed_bytes()))
