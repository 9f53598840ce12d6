"""Signature checking on the wire: the signer interface, key ids and the verifiers.

Private keys and their files are identity code and live in :mod:`siteclock.keys`."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature,
)

from siteclock.protocol.limits import BadSignature

# --------------------------------------------------------------------------- signatures


class Signer(Protocol):
    """Anything that signs bytes: a key file today, a secure element tomorrow."""

    alg: str
    kid: str

    def sign(self, data: bytes) -> bytes: ...

    def public_key_bytes(self) -> bytes: ...


class SignatureAlgorithm(Protocol):
    name: str

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` is valid."""


def key_id(public_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@lru_cache(maxsize=4096)
def _ed25519_public_key(public_key: bytes) -> ed25519.Ed25519PublicKey:
    """The key object for raw public key bytes, kept: a gateway checks thousands of events per
    second from a few hundred keys, and rebuilding the object each time is wasted work.
    Invalid bytes raise ``ValueError`` and are not kept."""
    return ed25519.Ed25519PublicKey.from_public_bytes(public_key)


class _Ed25519:
    name = "ed25519"

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        try:
            _ed25519_public_key(bytes(public_key)).verify(signature, data)
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature("ed25519 signature does not verify") from exc


class _EcdsaP256:
    """ECDSA P-256 with SHA-256 (COSE ES256), what an ATECC608 secure element can do.

    Signatures are the raw 64-byte r||s form; public keys are X9.62 uncompressed points.
    """

    name = "es256"

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> None:
        if len(signature) != 64:
            raise BadSignature("es256 signature is not 64 bytes")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature("es256 signature does not verify") from exc


ALGORITHMS: dict[str, SignatureAlgorithm] = {a.name: a for a in (_Ed25519(), _EcdsaP256())}
