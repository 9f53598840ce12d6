"""Ed25519 public-key checks: small-order, mixed-order and non-canonical points are refused."""

from __future__ import annotations

import pytest

from siteclock.keys import Ed25519Signer
from siteclock.provisioning.gateway.ed25519_points import P, decode, ed25519_key_problem
from siteclock.provisioning.gateway.key_checks import check_public_key
from siteclock.provisioning.shared.requests import EnrolmentRefused

# The encodings of the eight points of order 1, 2, 4 and 8 (RFC 8032's curve), canonical ones.
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]


def encode(x: int, y: int) -> bytes:
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def mixed_order(signer: Ed25519Signer) -> bytes:
    """A sound key plus the point of order 2, (0, -1): (x, y) -> (-x, -y)."""
    point = decode(signer.public_key_bytes())
    assert point is not None
    x, y, _, _ = point
    return encode((P - x) % P, (P - y) % P)


def test_generated_keys_are_sound() -> None:
    for _ in range(5):
        assert ed25519_key_problem(Ed25519Signer.generate().public_key_bytes()) is None


@pytest.mark.parametrize("encoded", SMALL_ORDER)
def test_small_order_points_are_refused(encoded: str) -> None:
    assert ed25519_key_problem(bytes.fromhex(encoded)) == "a small-order Ed25519 point"


def test_mixed_order_points_are_refused() -> None:
    problem = ed25519_key_problem(mixed_order(Ed25519Signer.generate()))
    assert problem == "an Ed25519 point outside the prime-order subgroup"


def test_non_canonical_and_off_curve_encodings_are_refused() -> None:
    y_too_big = (P + 1).to_bytes(32, "little")  # y = 1 written as p + 1
    assert ed25519_key_problem(y_too_big) == "not a canonical Ed25519 point"
    assert ed25519_key_problem(bytes(31)) == "not a canonical Ed25519 point"
    off_curve = next(
        bytes([n]) + bytes(31) for n in range(2, 50) if decode(bytes([n]) + bytes(31)) is None
    )
    assert ed25519_key_problem(off_curve) == "not a canonical Ed25519 point"


def test_check_public_key_refuses_bad_es256_points() -> None:
    with pytest.raises(EnrolmentRefused) as refused:
        check_public_key("es256", b"\x04" + bytes(64))
    assert refused.value.reason == "weak_key"
    with pytest.raises(EnrolmentRefused):
        check_public_key("es256", b"\x02" + bytes(32))  # compressed: not what terminals send
