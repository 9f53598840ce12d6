"""The evidence file's outer form: canonical JSON sealed by the gateway's key.

The file is ``{"evidence": {...}, "format": "siteclock-evidence", "seal": {...}, "version": 1}``
written as *canonical* JSON (keys sorted, no spaces, ASCII only, one final newline). The seal is
a COSE_Sign1 by the gateway's signing key whose payload is the SHA-256 of the canonical bytes of
``evidence``. A reader accepts only the canonical bytes, so every byte of the file counts: a
changed byte makes the JSON invalid, or not canonical, or changes a sealed value (or the seal).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from siteclock.protocol import (
    COSE_SIGN1_ENVELOPE,
    Envelope,
    ProtocolError,
    Signer,
    key_id,
    seal,
)

FORMAT = "siteclock-evidence"
VERSION = 1
COVERS = "sha256 of the canonical JSON of evidence"
_DOCUMENT_KEYS = {"evidence", "format", "seal", "version"}
_SEAL_KEYS = {"alg", "kid", "public_key", "cose_sign1", "covers"}


class EvidenceInvalid(ValueError):
    """The file is not an intact evidence file: what is wrong, in words."""


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no insignificant space, ASCII escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EvidenceInvalid(f"{what} is not base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise EvidenceInvalid(f"{what} is not valid base64") from None
    if b64(data) != text:  # the last character's unused bits could change unseen otherwise
        raise EvidenceInvalid(f"{what} is not in canonical base64")
    return data


def seal_document(evidence: dict[str, Any], signer: Signer) -> bytes:
    """The whole file's bytes: ``evidence`` sealed by ``signer`` (the gateway's key)."""
    digest = hashlib.sha256(canonical_json(evidence)).digest()
    envelope = seal(digest, signer, version=COSE_SIGN1_ENVELOPE)
    document = {
        "evidence": evidence,
        "format": FORMAT,
        "seal": {
            "alg": signer.alg,
            "kid": signer.kid,
            "public_key": signer.public_key_bytes().hex(),
            "cose_sign1": b64(envelope.to_cose_sign1()),
            "covers": COVERS,
        },
        "version": VERSION,
    }
    return canonical_json(document) + b"\n"


@dataclass(frozen=True, slots=True)
class Opened:
    """An evidence file whose form and seal check: its content and who sealed it."""

    evidence: dict[str, Any]
    seal_kid: str
    seal_alg: str


def _no_float(text: str) -> Any:
    raise EvidenceInvalid(f"the file holds a number {text[:20]!r}; this format has no floats")


def open_document(data: bytes) -> Opened:
    """Check the file's form and seal; raise :class:`EvidenceInvalid` naming the first fault."""
    try:
        document = json.loads(data.decode("ascii"), parse_float=_no_float,
                              parse_constant=_no_float)  # fmt: skip
    except (UnicodeDecodeError, ValueError) as exc:
        raise EvidenceInvalid(f"not an evidence file: its JSON does not parse ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise EvidenceInvalid(f"not an evidence file: format is not {FORMAT!r}")
    if document.get("version") != VERSION:
        raise EvidenceInvalid(f"evidence version {document.get('version')!r} is not {VERSION}")
    if canonical_json(document) + b"\n" != data:
        raise EvidenceInvalid("the file is not byte for byte as written: it was edited")
    evidence, sealed = document.get("evidence"), document.get("seal")
    if not isinstance(evidence, dict) or not isinstance(sealed, dict):
        raise EvidenceInvalid("the file lacks its evidence or its seal")
    # every byte outside ``evidence`` is checked too: nothing there may be unknown or different
    if set(document) != _DOCUMENT_KEYS or set(sealed) != _SEAL_KEYS:
        raise EvidenceInvalid("the file or its seal has fields this format does not have")
    if sealed["covers"] != COVERS:
        raise EvidenceInvalid("the seal says it covers something else")
    try:
        public = bytes.fromhex(str(sealed["public_key"]))
    except ValueError:
        raise EvidenceInvalid("the seal's public key is not hex") from None
    if public.hex() != sealed["public_key"]:
        raise EvidenceInvalid("the seal's public key is not in lower-case hex")
    try:
        envelope = Envelope.from_cose_sign1(unb64(sealed.get("cose_sign1"), "the seal"))
        if envelope.kid != key_id(public) or envelope.kid != sealed.get("kid"):
            raise EvidenceInvalid("the seal's key id does not name its public key")
        if envelope.alg != sealed.get("alg"):
            raise EvidenceInvalid("the seal's algorithm is not the one it states")
        envelope.verify({envelope.kid: public})
    except ProtocolError as exc:
        raise EvidenceInvalid(f"the seal does not verify: {exc}") from None
    if envelope.body != hashlib.sha256(canonical_json(evidence)).digest():
        raise EvidenceInvalid("the seal does not cover this evidence: it was changed")
    return Opened(evidence=evidence, seal_kid=envelope.kid, seal_alg=envelope.alg)
