"""Checks on the public keys and proofs of possession a terminal presents."""

from __future__ import annotations

from siteclock.protocol import (
    ALGORITHMS,
    ProtocolError,
)
from siteclock.provisioning.gateway.ed25519_points import ed25519_key_problem
from siteclock.provisioning.shared.requests import EnrolmentRefused


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
