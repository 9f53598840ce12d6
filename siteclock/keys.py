"""Keys and key files: the private halves the wire contract never carries.

A signer holds a private key in memory and signs bytes; the wire contract
(:mod:`siteclock.protocol`) only knows the :class:`~siteclock.protocol.Signer` interface and
checks signatures with public keys. A terminal's identity and the gateway's roster key are both
one Ed25519 key in a 0600 file of 32 raw private-key bytes.

The file is created atomically with ``O_CREAT|O_EXCL`` and mode 0600, so two starting processes
cannot both create one and the key is never readable by anyone else, not even for a moment. A key
file that group or others can read is refused: a leaked key lets anyone forge that key's history
(DESIGN decision 2).

Example::

    signer = load_or_create(Path("/var/lib/siteclock/terminal.key"))
    signer.kid   # "3f2a..." the name the gateway knows this key by
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from siteclock.protocol import key_id


class Ed25519Signer:
    """The default signer: an Ed25519 private key held in memory (loaded from a 0600 file)."""

    alg = "ed25519"

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_key_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class EcdsaP256Signer:
    """ES256 in software; a secure element would implement the same three members."""

    alg = "es256"

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> EcdsaP256Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def public_key_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


KEY_SIZE = 32


class IdentityError(Exception):
    """A key file cannot be used."""


class KeyFileInsecure(IdentityError, PermissionError):
    """The key file is readable or writable by group or others."""


class KeyFileInvalid(IdentityError, ValueError):
    """The key file does not hold a 32-byte Ed25519 private key."""


def load(path: Path) -> Ed25519Signer:
    """Load an existing key file, refusing one that is not private to its owner."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise KeyFileInsecure(
                f"{path}: key file has mode {stat.S_IMODE(mode):04o}; it must not be readable by "
                f"group or others (run: chmod 600 {path})"
            )
        raw = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(raw) != KEY_SIZE:
        raise KeyFileInvalid(f"{path}: key file holds {len(raw)} bytes, expected {KEY_SIZE}")
    return Ed25519Signer.from_private_bytes(raw)


def create(path: Path) -> Ed25519Signer:
    """Generate a new key and write it to ``path``, which must not exist yet."""
    path = Path(path)
    signer = Ed25519Signer.generate()
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, signer.private_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    return signer


def load_or_create(path: Path) -> Ed25519Signer:
    """The signer of the key at ``path``, generated there on first start."""
    path = Path(path)
    try:
        signer = create(path)
    except FileExistsError:
        return load(path)
    # The public half, in hex, for ``siteclock verify-chain --public-key`` and provisioning.
    public_path(path).write_text(signer.public_key_bytes().hex() + "\n")
    return signer


def public_path(path: Path) -> Path:
    """Where the public key of the key file ``path`` is written (``terminal.key.pub``)."""
    return Path(path).with_name(Path(path).name + ".pub")
