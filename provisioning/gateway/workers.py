"""Employer tooling: workers and badges, one by one or from a CSV file, and their rosters.

Everything goes through :class:`gateway.registry.Registry`, which checks identifiers again and
encrypts the INSS at rest. This module adds what an employer's office needs around it:

* **CSV import** with every row validated (INSS check digits, name, employer enterprise number
  check digits or foreign VAT number, capacity, optional badge and workplace) and a report of
  each rejected row: line number, column, and why. A bad row never stops the good ones, and a
  message never contains an INSS (it says "check digits do not match", not the number).
* A **pseudonymous worker reference** derived from the INSS with a keyed hash (HMAC, key file
  0600): re-importing the same person updates them instead of adding a twin, and the reference
  reveals nothing without the key. Terminals only ever see this reference and the name.
* **Badges**: link by UID (typed, or read from a reader in enrolment mode), refuse a badge
  already linked to another active worker, block a lost badge.
* **Rosters**: after a change, the affected workplaces' terminals get their new roster.

CSV columns (header row required; extra columns are refused so a typo is not silently
ignored): ``inss,name,employer,capacity`` and optionally ``badge,workplace``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from siteclock.gateway.identifiers import (
    InvalidIdentifier,
    normalize_enterprise_number,
    normalize_foreign_vat,
    normalize_inss,
)
from siteclock.gateway.registry import EmployerKind, Registry, RegistryError
from siteclock.inss_shape import WRITTEN_INSS_RE, redact
from siteclock.protocol import BADGE_RE
from siteclock.provisioning.shared.workplace import WorkplaceError, parse_reference

CAPACITIES = ("employee", "self_employed", "temp_worker", "intern", "student", "other")
REQUIRED_COLUMNS = ("inss", "name", "employer", "capacity")
OPTIONAL_COLUMNS = ("badge", "workplace")
MAX_NAME = 80

T = TypeVar("T")


class WorkerError(ValueError):
    """A worker or badge operation is refused; the message says why (never with an INSS)."""


# --------------------------------------------------------------------------- references


def load_or_create_ref_key(path: Path) -> bytes:
    """The HMAC key behind worker references (32 bytes, 0600, created once, never replaced)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise WorkerError(f"{path}: key file must be mode 0600") from None
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def worker_ref(key: bytes, inss: str) -> str:
    """A stable pseudonym for a worker: ``w-`` and 16 hex digits of HMAC-SHA256(key, INSS).

    About 3 % of such hex strings hold a run of exactly 11 decimal digits, which every INSS
    guard (log redaction, the roster's check) must treat as an INSS. Those are derived again
    from ``INSS#1``, ``INSS#2``...: still stable for the same key and INSS, and every reference
    that never looked like an INSS is the one it always was.
    """
    digits = normalize_inss(inss)
    for attempt in range(64):
        message = digits if attempt == 0 else f"{digits}#{attempt}"
        ref = "w-" + hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:16]
        if not WRITTEN_INSS_RE.search(ref):
            return ref
    raise WorkerError("no INSS-free worker reference could be derived")  # p < 0.04**64


# --------------------------------------------------------------------------- row validation


def parse_employer(value: str) -> tuple[str, EmployerKind]:
    """A Belgian enterprise number (``0123.456.749``, ``BE0123456749``) or a foreign VAT."""
    text = (value or "").strip()
    if not text:
        raise WorkerError("employer is empty")
    compact = re.sub(r"[\s.\-/]", "", text.upper())
    try:
        if compact.startswith("BE") or compact.isdigit():
            return normalize_enterprise_number(text), EmployerKind.ENTERPRISE
        return normalize_foreign_vat(text), EmployerKind.FOREIGN_VAT
    except InvalidIdentifier as exc:
        raise WorkerError(str(exc)) from None


def parse_badge(value: str) -> str:
    """``nfc-a:04a1b2c3`` or a bare hex UID (taken as ``nfc-a``) -> ``nfc-a:04A1B2C3``."""
    text = (value or "").strip()
    tech, _, ident = text.rpartition(":")
    badge = f"{(tech or 'nfc-a').lower()}:{ident.upper()}"
    if not BADGE_RE.match(badge) or len(ident) % 2:
        raise WorkerError(f"badge {text!r} is not a UID (hex bytes, e.g. nfc-a:04A1B2C3)")
    return badge


@dataclass(frozen=True)
class WorkerRow:
    inss: str
    name: str
    employer: str
    employer_kind: EmployerKind
    capacity: str
    badge: str | None = None
    workplace: str | None = None


def _column(name: str, text: str, parse: Callable[[str], T], error: type[Exception]) -> T:
    """``parse(text)``; its ``error`` becomes a :class:`WorkerError` that names the column."""
    try:
        return parse(text)
    except error as exc:
        raise WorkerError(f"{name}: {exc}") from None


def validate_row(raw: dict[str, str]) -> WorkerRow:
    """One CSV row -> a checked :class:`WorkerRow`; :class:`WorkerError` names the column."""

    def col(name: str) -> str:
        return (raw.get(name) or "").strip()

    try:
        inss = normalize_inss(col("inss"))
    except InvalidIdentifier as exc:
        raise WorkerError(f"inss: {str(exc).removeprefix('inss: ')}") from None
    name = col("name")
    if not name or len(name) > MAX_NAME:
        raise WorkerError(f"name: must be 1-{MAX_NAME} characters")
    employer, kind = _column("employer", col("employer"), parse_employer, WorkerError)
    capacity = col("capacity").lower().replace("-", "_").replace(" ", "_") or "employee"
    if capacity not in CAPACITIES:
        raise WorkerError(f"capacity: {col('capacity')!r} is not one of {', '.join(CAPACITIES)}")
    badge = _column("badge", col("badge"), parse_badge, WorkerError) if col("badge") else None
    workplace = (
        _column("workplace", col("workplace"), parse_reference, WorkplaceError)
        if col("workplace")
        else None
    )
    return WorkerRow(inss, name, employer, kind, capacity, badge, workplace)


# --------------------------------------------------------------------------- the roster of work


@dataclass(frozen=True)
class Rejection:
    """One refused row. ``reason`` is masked on the way in: a message may quote a cell, and
    an INSS typed in the wrong column (employer, badge...) must not reach the report."""

    line: int
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", redact(self.reason))


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    workplaces: set[str] = field(default_factory=set)
    """Workplaces whose roster changed (their terminals need the new roster)."""

    def text(self) -> str:
        lines = [f"{self.accepted} worker(s) imported, {len(self.rejected)} row(s) rejected"]
        lines += [f"  line {r.line}: {r.reason}" for r in self.rejected]
        return "\n".join(lines)


class Workers:
    """Employer operations on the registry."""

    def __init__(self, registry: Registry, ref_key: bytes) -> None:
        self.registry = registry
        self.ref_key = ref_key

    def add(self, row: WorkerRow) -> str:
        """Add or update one worker (and badge, workplace); returns the worker reference."""
        ref = worker_ref(self.ref_key, row.inss)
        if row.badge is not None:
            self._check_badge_free(row.badge, ref)
        try:
            self.registry.add_worker(
                ref, row.name, inss=row.inss, employer=row.employer,
                employer_kind=row.employer_kind, capacity=row.capacity,
            )  # fmt: skip
            if row.workplace is not None:
                self.registry.assign(ref, row.workplace)
            if row.badge is not None:
                self.registry.enrol_badge(row.badge, ref)
        except (RegistryError, InvalidIdentifier) as exc:
            raise WorkerError(str(exc)) from None
        return ref

    def _check_badge_free(self, badge: str, ref: str) -> None:
        owner = self.registry.resolve(badge)
        if owner is not None and owner.worker_ref != ref:
            raise WorkerError(
                f"badge: {badge} is already linked to another worker ({owner.worker_ref}); "
                "block it first if it changed hands"
            )

    def import_csv(self, text: str) -> ImportReport:
        report = ImportReport()
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if missing or unknown:
            problem = []
            if missing:
                problem.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                problem.append(f"unknown column(s) {', '.join(unknown)}")
            report.rejected.append(Rejection(1, "header: " + "; ".join(problem)))
            return report
        reader.fieldnames = header
        seen_inss: dict[str, int] = {}
        seen_badges: dict[str, int] = {}
        for raw in reader:
            line = reader.line_num
            if None in raw:  # more cells than columns
                report.rejected.append(Rejection(line, "row has more cells than the header"))
                continue
            try:
                row = validate_row(raw)
                if row.inss in seen_inss:
                    raise WorkerError(f"inss: same person as line {seen_inss[row.inss]}")
                if row.badge is not None and row.badge in seen_badges:
                    raise WorkerError(
                        f"badge: {row.badge} is also on line {seen_badges[row.badge]}"
                    )
                self.add(row)
            except WorkerError as exc:
                report.rejected.append(Rejection(line, str(exc)))
                continue
            seen_inss[row.inss] = line
            if row.badge is not None:
                seen_badges[row.badge] = line
            if row.workplace is not None:
                report.workplaces.add(row.workplace)
            report.accepted += 1
        return report

    def link_badge(self, badge: str, worker: str) -> str:
        badge = parse_badge(badge)
        self._check_badge_free(badge, worker)
        try:
            self.registry.enrol_badge(badge, worker)
        except RegistryError as exc:
            raise WorkerError(str(exc)) from None
        return badge

    def block_badge(self, badge: str) -> str:
        badge = parse_badge(badge)
        if self.registry.resolve(badge) is None:
            raise WorkerError(f"badge {badge} is not linked to anyone, or already blocked")
        self.registry.block_badge(badge)
        return badge


def push_rosters(
    registry: Registry,
    terminals_for: Callable[[str], Iterable[str]],
    publish: Callable[[str, list], object],
    workplaces: Iterable[str],
) -> int:
    """Publish the current roster to every terminal bound to one of ``workplaces``."""
    sent = 0
    for workplace in sorted(set(workplaces)):
        entries = registry.roster_for(workplace)
        for terminal in terminals_for(workplace):
            publish(terminal, entries)
            sent += 1
    return sent
