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

The checks of a row or a whole CSV that need no database (columns, delimiter, identifiers,
repeats) live in :mod:`provisioning.gateway.workers_csv`, which the console calls too; what
only the registry can tell (a workplace it does not know, a badge already someone else's) is
checked here, and such a row is refused with its line while the good rows are saved.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from siteclock.gateway.identifiers import InvalidIdentifier, normalize_inss
from siteclock.gateway.registry import Registry, RegistryError
from siteclock.inss_shape import WRITTEN_INSS_RE
from siteclock.provisioning.gateway.workers_csv import (
    CAPACITIES,
    Rejection,
    WorkerError,
    WorkerRow,
    parse_badge,
    parse_employer,
    parse_workers_csv,
    validate_row,
)

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


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    workplaces: set[str] = field(default_factory=set)
    """Workplaces whose roster changed (their terminals need the new roster)."""

    def text(self) -> str:
        lines = [f"{self.accepted} worker(s) imported, {len(self.rejected)} row(s) rejected"]
        lines += [f"  {r}" for r in self.rejected]
        if self.rejected and self.accepted:
            lines.append("the good rows were saved; fix the rejected ones and import them again")
        return "\n".join(lines)


class Workers:
    """Employer operations on the registry."""

    def __init__(self, registry: Registry, ref_key: bytes) -> None:
        self.registry = registry
        self.ref_key = ref_key

    def add(self, row: WorkerRow) -> str:
        """Add or update one worker (and badge, workplace); returns the worker reference.

        The workplace must already be in the registry: a typo in a reference would otherwise
        create a roster no terminal serves (``provision run``'s first enrolment, or
        ``workers workplace-add``, creates a workplace; nothing else does).
        """
        ref = worker_ref(self.ref_key, row.inss)
        if row.badge is not None:
            self._check_badge_free(row.badge, ref)
        if row.workplace is not None and not self.registry.has_workplace(row.workplace):
            raise WorkerError(
                f"workplace: {row.workplace} is not known to this gateway (enrol a terminal "
                "for it first, or check the reference)"
            )
        try:
            with self.registry.atomic():
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
        """Save every good row of a workers CSV (:func:`parse_workers_csv`); each bad one is
        reported and skipped, the good ones are kept (a row is saved whole or not at all)."""
        rows, rejections = parse_workers_csv(text)
        report = ImportReport(rejected=list(rejections))
        for item in rows:
            try:
                self.add(item.row)
            except WorkerError as exc:
                report.rejected.append(Rejection(item.line, str(exc)))
                continue
            if item.row.workplace is not None:
                report.workplaces.add(item.row.workplace)
            report.accepted += 1
        report.rejected.sort(key=lambda r: r.line)
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


__all__ = [  # the row checks live in workers_csv; named here too for older callers
    "CAPACITIES",
    "ImportReport",
    "Rejection",
    "WorkerError",
    "WorkerRow",
    "Workers",
    "load_or_create_ref_key",
    "parse_badge",
    "parse_employer",
    "push_rosters",
    "validate_row",
    "worker_ref",
]
