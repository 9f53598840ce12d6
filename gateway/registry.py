"""Who a badge belongs to: the gateway's registry of workers, badges and workplaces.

The terminal only knows a badge and a pseudonymous worker reference with a display name
(DESIGN decision 5). This registry alone maps them to the worker's INSS/BIS number and
employer (a Belgian enterprise number, or a foreign VAT number: a subcontractor's worker carries
their own employer), and each Declaration of Works reference to the workplace's coordinates or
address, which CIaO needs with every registration.

The INSS is encrypted at rest with AES-GCM (the worker reference is the associated data, so a
ciphertext copied onto another row does not decrypt) under a 32-byte key kept in a file of
mode 0600. In memory it travels as :class:`Inss`, whose ``repr``/``str`` never show the number:
only :meth:`Inss.reveal` does, and only the CIaO request builder calls it.

Example::

    reg = Registry(tmp / "gateway.db", tmp / "inss.key")
    reg.add_workplace("1Y1003SQ5VSSZ", latitude=50.85, longitude=4.35)
    reg.add_worker("w-17", "An Peeters", inss="90010100123", employer="0123456749")
    reg.enrol_badge("nfc-a:04A1B2C3", "w-17")
    reg.assign("w-17", "1Y1003SQ5VSSZ")
    reg.resolve("nfc-a:04A1B2C3").employer.id   # '0123456749'
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siteclock.files import create_durably, make_dir_durably
from siteclock.gateway.db import RELAY_BUSY_TIMEOUT_S, GatewayDB, open_gateway_db
from siteclock.gateway.identifiers import (
    InvalidIdentifier,
    normalize_enterprise_number,
    normalize_foreign_vat,
    normalize_inss,
    normalize_workplace,
)
from siteclock.inss_shape import WRITTEN_INSS_RE
from siteclock.protocol import RosterEntry, check_badge

KEY_SIZE = 32


class RegistryError(ValueError):
    """A registry operation names something unknown or invalid."""


class Inss:
    """An INSS/BIS number that does not print itself (repr, str, f-strings, logs)."""

    __slots__ = ("_digits",)

    def __init__(self, digits: str) -> None:
        self._digits = normalize_inss(digits)

    def reveal(self) -> str:
        """The 11 digits: only for the CIaO request body, never for a log or a display."""
        return self._digits

    def __repr__(self) -> str:
        return "Inss(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Inss) and secrets.compare_digest(self._digits, other._digits)

    def __hash__(self) -> int:
        return hash(self._digits)

    def __reduce__(self) -> Any:  # pickling would be a way out of the redaction
        raise TypeError("an Inss is not picklable")


class EmployerKind(StrEnum):
    ENTERPRISE = "enterprise"  # Belgian enterprise number, 10 digits
    FOREIGN_VAT = "foreign_vat"


@dataclass(frozen=True, slots=True)
class Employer:
    id: str
    kind: EmployerKind

    @classmethod
    def parse(cls, value: str, kind: EmployerKind | str = EmployerKind.ENTERPRISE) -> Employer:
        kind = EmployerKind(kind)
        if kind is EmployerKind.ENTERPRISE:
            return cls(normalize_enterprise_number(value), kind)
        return cls(normalize_foreign_vat(value), kind)


@dataclass(frozen=True, slots=True)
class Workplace:
    """A Declaration of Works reference with where it is: coordinates, an address, or both."""

    ref: str
    latitude: float | None = None
    longitude: float | None = None
    address: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the relay needs to register one tap of this badge."""

    worker_ref: str
    name: str
    inss: Inss
    employer: Employer
    capacity: str


def load_or_create_key(path: Path | str) -> bytes:
    """Read the 32-byte INSS key, creating it (mode 0600, never overwritten) if absent.

    Refuses a key file that group or others may read: a leaked key exposes every INSS.
    """
    path = Path(path)
    make_dir_durably(path.parent, 0o700)  # its own directory, owner only
    key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
    try:  # whole and named durably: a key lost to a power cut would orphan every stored INSS
        create_durably(path, key, mode=0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise RegistryError(f"{path}: key file mode {mode:o} is not 0600") from None
        key = path.read_bytes()
        if len(key) != KEY_SIZE:
            raise RegistryError(f"{path}: key file is not {KEY_SIZE} bytes") from None
    return key


class Registry:
    """Workers, badges, workplaces in SQLite (same file as the gateway's store, or its own).

    Thread-safe: one connection behind a lock, because the relay thread and the employer's
    tooling share it. ``version`` grows with every change, so the relay knows when to retry
    events it could not resolve.
    """

    def __init__(self, db_path: Path | str | GatewayDB, key_path: Path | str) -> None:
        self._aead = AESGCM(load_or_create_key(key_path))
        self._db, self._owned = open_gateway_db(db_path, busy_timeout_s=RELAY_BUSY_TIMEOUT_S)

    def close(self) -> None:
        if self._owned:
            self._db.close()

    # ------------------------------------------------------------------ changes

    def add_worker(
        self,
        ref: str,
        name: str,
        *,
        inss: str,
        employer: str,
        employer_kind: EmployerKind | str = EmployerKind.ENTERPRISE,
        capacity: str = "employee",
    ) -> None:
        """Add or update a worker. The INSS and employer number are checked, then encrypted."""
        if not ref or len(ref) > 64:
            raise RegistryError("worker reference must be 1-64 characters")
        if WRITTEN_INSS_RE.search(ref):  # it goes to terminals, logs and metrics: never an INSS
            raise RegistryError("a worker reference must not look like an INSS (11 digits)")
        digits = Inss(inss).reveal()
        emp = Employer.parse(employer, employer_kind)
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, digits.encode(), ref.encode())
        self._db.save_worker(ref, name, sealed, emp.id, str(emp.kind), capacity)

    def enrol_badge(self, badge: str, worker_ref: str) -> None:
        check_badge(badge)
        if not self._db.worker_exists(worker_ref):
            raise RegistryError(f"unknown worker {worker_ref!r}")
        self._db.link_badge(badge, worker_ref)

    def block_badge(self, badge: str) -> None:
        self._db.block_badge(badge)

    def add_workplace(
        self,
        ref: str,
        *,
        latitude: float | None = None,
        longitude: float | None = None,
        address: dict[str, str] | None = None,
    ) -> None:
        """Add or update a workplace; CIaO needs its coordinates or its address."""
        ref = normalize_workplace(ref)
        has_coords = latitude is not None and longitude is not None
        if not has_coords and not address:
            raise RegistryError("a workplace needs coordinates or an address")
        if has_coords and not (-90 <= latitude <= 90 and -180 <= longitude <= 180):  # type: ignore[operator]
            raise RegistryError("coordinates are out of range")
        self._db.save_workplace(ref, latitude, longitude, json.dumps(address) if address else None)

    def assign(self, worker_ref: str, workplace: str) -> None:
        """Put a worker on a workplace's roster (the badges its terminals greet by name)."""
        self._db.assign_worker(worker_ref, normalize_workplace(workplace))

    # ------------------------------------------------------------------ queries

    @property
    def version(self) -> int:
        return self._db.registry_version()

    def resolve(self, badge: str) -> Resolved | None:
        """The worker behind an active badge, or None (unknown, blocked)."""
        return self._worker(self._db.worker_row_of_badge(badge))

    def badge_blocked(self, badge: str) -> bool:
        """True when the badge is enrolled but blocked (the relay tells it from "unknown")."""
        return self._db.badge_active(badge) is False

    def worker(self, ref: str) -> Resolved | None:
        """A worker by pseudonymous reference (the relay's search after an ambiguous POST)."""
        return self._worker(self._db.worker_row(ref))

    def _worker(self, row: tuple[Any, ...] | None) -> Resolved | None:
        if row is None:
            return None
        ref, name, sealed, emp_id, emp_kind, capacity = row
        try:
            digits = self._aead.decrypt(sealed[:12], sealed[12:], ref.encode()).decode()
        except InvalidTag:
            raise RegistryError(f"worker {ref!r}: INSS does not decrypt with this key") from None
        return Resolved(ref, name, Inss(digits), Employer(emp_id, EmployerKind(emp_kind)), capacity)

    def workplace(self, ref: str) -> Workplace | None:
        row = self._db.workplace_row(ref)
        if row is None:
            return None
        return Workplace(row[0], row[1], row[2], json.loads(row[3]) if row[3] else None)

    def roster_for(self, workplace: str) -> list[RosterEntry]:
        """The badges a workplace's terminals may greet: reference and name, never the INSS."""
        rows = self._db.roster_rows(normalize_workplace(workplace))
        return [RosterEntry(b, ref, name, blocked=not active) for b, ref, name, active in rows]


__all__ = [
    "Employer",
    "EmployerKind",
    "Inss",
    "InvalidIdentifier",
    "Registry",
    "RegistryError",
    "Resolved",
    "Workplace",
    "load_or_create_key",
]
