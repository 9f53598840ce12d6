"""Is a 32-byte Ed25519 public key a sound one? Point decoding and order checks (RFC 8032).

``cryptography`` verifies signatures but accepts any 32 bytes as a public key, including the
eight small-order points (with which a "signature" can verify for messages nobody signed) and
points of mixed order (whose verification differs between cofactored and cofactorless
verifiers). A terminal's key is checked once, at enrolment and rotation, so plain integer
arithmetic is fast enough (a few milliseconds) and needs no extra dependency.
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
"""Order of the prime subgroup (the base point's order)."""
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
IDENTITY: Point = (0, 1, 1, 0)


def decode(encoded: bytes) -> Point | None:
    """The point a canonical 32-byte encoding names, or None (not canonical, not on the curve)."""
    if len(encoded) != 32:
        return None
    y = int.from_bytes(encoded, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:
        return None  # a second encoding of y mod p
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x2 = u * pow(v, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None  # no x: not a curve point
    if x == 0 and sign:
        return None  # -0: a second encoding
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def add(a: Point, b: Point) -> Point:
    """Complete addition on the twisted Edwards curve (a = -1), also used for doubling."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * D * t1 * t2 % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def multiply(point: Point, scalar: int) -> Point:
    result, addend = IDENTITY, point
    while scalar:
        if scalar & 1:
            result = add(result, addend)
        addend = add(addend, addend)
        scalar >>= 1
    return result


def is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def ed25519_key_problem(public_key: bytes) -> str | None:
    """None for a sound key, else what is wrong with it."""
    point = decode(bytes(public_key))
    if point is None:
        return "not a canonical Ed25519 point"
    if is_identity(multiply(point, 8)):
        return "a small-order Ed25519 point"
    if not is_identity(multiply(point, L)):
        return "an Ed25519 point outside the prime-order subgroup"
    return None
