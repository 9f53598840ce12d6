"""Keys and key files: the private halves the wire contract never carries.

A signer holds a private key in memory and signs bytes; the wire contract
(:mod:`siteclock.protocol`) only knows the :class:`~siteclock.protocol.Signer` interface and
checks signatures with public keys. A terminal's identity and the gateway's roster key are both
one Ed25519 key in a 0600 file of 32 raw private-key bytes.

The file is created atomically, whole and with mode 0600 (:func:`siteclock.files.create_durably`),
so two starting processes cannot both create one, a power cut never leaves half a key, and the
key is never readable by anyone else, not even for a moment. A key
file that group or others can read is refused: a leaked key lets anyone forge that key's history
(DESIGN decision 2).

Example::

    signer = load_or_create(Path("/var/lib/siteclock/terminal.key"))
    signer.kid   # "3f2a..." the name the gateway knows this key by
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from siteclock.files import create_durably, write_public
from siteclock.protocol import key_id

log = logging.getLogger(__name__)


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
    """Generate a new key and write it to ``path``, which must not exist yet.

    The key is synced under a temporary name and then linked to ``path`` (its directory synced
    too): a power cut leaves no key file or a whole one, never an empty ``terminal.key`` that
    would stop the terminal from starting.
    """
    path = Path(path)
    signer = Ed25519Signer.generate()
    create_durably(path, signer.private_bytes(), mode=0o600)
    return signer


def load_or_create(path: Path) -> Ed25519Signer:
    """The signer of the key at ``path``, generated there on first start.

    The public half is kept next to it (``terminal.key.pub``, in hex) for ``siteclock
    verify-chain --public-key`` and provisioning; one that is missing or does not match the key
    (a power cut during first start could once leave it empty) is written again.
    """
    path = Path(path)
    try:
        signer = create(path)
    except FileExistsError:
        signer = load(path)
    _ensure_public(public_path(path), signer)
    return signer


def _ensure_public(path: Path, signer: Ed25519Signer) -> None:
    expected = signer.public_key_bytes().hex() + "\n"
    try:
        if path.read_text() == expected:
            return
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: written below
    try:
        write_public(path, expected.encode())
    except OSError as exc:  # a read-only disk must not stop a terminal that can still sign
        log.warning(
            "public key file %s is missing or damaged and cannot be written again (%s); "
            "the terminal keeps signing, but verify-chain needs it: free or remount the disk",
            path, exc,
        )


def public_path(path: Path) -> Path:
    """Where the public key of the key file ``path`` is written (``terminal.key.pub``)."""
    return Path(path).with_name(Path(path).name + ".pub")
