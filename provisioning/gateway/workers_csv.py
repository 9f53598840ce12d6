"""Worker rows checked without touching a database: one CSV file, or one row from a form.

The command line (``siteclock workers import``/``add``) and the console both call this module,
so a row is judged the same way wherever it was typed:

* :func:`parse_workers_csv` ``(text) -> (rows, rejections)``: the header is required; the
  delimiter is taken from it (``,`` ``;`` or a tab: spreadsheets set to a Belgian locale save
  with ``;``); every row is checked (INSS check digits, name, employer enterprise number check
  digits or foreign VAT number, capacity, optional badge and workplace) and a row that repeats
  an INSS or a badge of an earlier row is refused. Each :class:`Rejection` names the line and
  the column; its text never holds an INSS (an INSS-shaped cell typed in the wrong column is
  masked too).
* :func:`validate_row` ``(mapping) -> WorkerRow`` for one row (a form, ``workers add``).

What only the registry can tell (is the workplace known? is the badge someone else's?) is
checked where the rows are saved, in :mod:`siteclock.provisioning.gateway.workers`.

Columns: ``inss,name,employer,capacity`` and optionally ``badge,workplace``; an unknown
column is refused so a typo (``capacty``) is not silently ignored.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from siteclock.gateway.identifiers import (
    InvalidIdentifier,
    normalize_enterprise_number,
    normalize_foreign_vat,
    normalize_inss,
)
from siteclock.gateway.registry import EmployerKind
from siteclock.inss_shape import redact
from siteclock.protocol import BADGE_RE
from siteclock.provisioning.shared.workplace import WorkplaceError, parse_reference

CAPACITIES = ("employee", "self_employed", "temp_worker", "intern", "student", "other")
REQUIRED_COLUMNS = ("inss", "name", "employer", "capacity")
OPTIONAL_COLUMNS = ("badge", "workplace")
MAX_NAME = 80
DELIMITERS = (",", ";", "\t")

T = TypeVar("T")


class WorkerError(ValueError):
    """A worker or badge operation is refused; the message says why (never with an INSS)."""


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

    def __repr__(self) -> str:  # a row may end up in a log or a traceback: never the INSS
        return f"WorkerRow(name={self.name!r}, employer={self.employer!r}, badge={self.badge!r})"


def _column(name: str, text: str, parse: Callable[[str], T], error: type[Exception]) -> T:
    """``parse(text)``; its ``error`` becomes a :class:`WorkerError` that names the column."""
    try:
        return parse(text)
    except error as exc:
        raise WorkerError(f"{name}: {exc}") from None


def validate_row(raw: dict[str, str]) -> WorkerRow:
    """One row -> a checked :class:`WorkerRow`; :class:`WorkerError` names the column."""

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


@dataclass(frozen=True)
class Rejection:
    """One refused row (line 1 is the header). ``reason`` is masked on the way in: a message
    may quote a cell, and an INSS typed in the wrong column must not reach the report."""

    line: int
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", redact(self.reason))

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class CsvRow:
    """A row that passed every check this module can make, with its line in the file."""

    line: int
    row: WorkerRow


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a header line: the one of ``, ; tab`` that splits it into the most
    known column names (a ``;`` file holds commas nowhere in its header, and vice versa)."""
    known = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)

    def score(delimiter: str) -> int:
        return sum(c.strip().lower() in known for c in header_line.split(delimiter))

    return max(DELIMITERS, key=score)


def _header_problem(header: list[str], delimiter: str) -> str | None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if not missing and not unknown:
        return None
    problem = []
    if missing:
        problem.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problem.append(f"unknown column(s) {', '.join(unknown)}")
    seen = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    return (
        "header: " + "; ".join(problem) + f" (read as {seen}-separated; expected "
        f"{','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}])"
    )


def parse_workers_csv(text: str) -> tuple[list[CsvRow], list[Rejection]]:
    """Every row of a workers CSV checked: ``(good rows, rejections)``, in file order.

    A header problem rejects the whole file (line 1) and returns no rows: columns read wrongly
    would put names in the employer column. Blank lines are skipped.
    """
    text = text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        return [], [Rejection(1, "header: the file is empty or starts with a blank line")]
    delimiter = sniff_delimiter(first_line)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    problem = _header_problem(header, delimiter)
    if problem is not None:
        return [], [Rejection(1, problem)]
    reader.fieldnames = header
    rows: list[CsvRow] = []
    rejections: list[Rejection] = []
    seen_inss: dict[str, int] = {}
    seen_badges: dict[str, int] = {}
    try:
        for raw in reader:
            line = reader.line_num
            if None in raw:  # more cells than columns
                rejections.append(Rejection(line, "row has more cells than the header"))
                continue
            try:
                row = validate_row(raw)  # type: ignore[arg-type]
                if row.inss in seen_inss:
                    raise WorkerError(f"inss: same person as line {seen_inss[row.inss]}")
                if row.badge is not None and row.badge in seen_badges:
                    raise WorkerError(
                        f"badge: {row.badge} is also on line {seen_badges[row.badge]}"
                    )
            except WorkerError as exc:
                rejections.append(Rejection(line, str(exc)))
                continue
            seen_inss[row.inss] = line
            if row.badge is not None:
                seen_badges[row.badge] = line
            rows.append(CsvRow(line, row))
    except csv.Error as exc:  # e.g. a quote never closed: the rest of the file is unreadable
        rejections.append(Rejection(reader.line_num, f"unreadable from here on: {exc}"))
    return rows, rejections


__all__ = [
    "CAPACITIES",
    "CsvRow",
    "Rejection",
    "WorkerError",
    "WorkerRow",
    "parse_badge",
    "parse_employer",
    "parse_workers_csv",
    "sniff_delimiter",
    "validate_row",
]
