"""Issue 11, the employer's daily work on workers: CSV files as Belgian spreadsheets save them,
unknown workplaces refused, and the lists and moves an office needs (Seen 7 and 10)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.registry import Registry, RegistryError
from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key, worker_ref
from siteclock.provisioning.gateway.workers_csv import parse_workers_csv, sniff_delimiter

WP, WP2, WP_UNKNOWN = "1Y1003SQ5VSSZ", "2A2004TR6WTTX", "3B3005US7XUUY"
ANA, BOB = (p + inss_check_digits(p) for p in ("850101123", "900215045"))
EMPLOYER = "04035742" + enterprise_check_digits("04035742")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    registry = Registry(tmp_path / "gw.db", tmp_path / "inss.key")
    registry.add_workplace(WP, latitude=50.85, longitude=4.35)
    registry.add_workplace(WP2, latitude=51.05, longitude=3.72)
    yield Workers(registry, load_or_create_ref_key(tmp_path / "ref.key"))
    registry.close()


def test_semicolon_csv_is_read_like_a_comma_one() -> None:
    """Seen 10: a `;`-separated CSV (Excel in a Belgian locale) is accepted, not refused with
    a message about missing columns."""
    text = f"inss;name;employer;capacity;badge\n{ANA};Ana Peeters;{EMPLOYER};employee;04A1B2C3\n"
    rows, rejections = parse_workers_csv(text)
    assert rejections == []
    assert [(r.line, r.row.name, r.row.badge) for r in rows] == [
        (2, "Ana Peeters", "nfc-a:04A1B2C3")
    ]
    assert sniff_delimiter("inss\tname\temployer\tcapacity") == "\t"


def test_a_header_that_fits_no_delimiter_says_what_was_expected() -> None:
    """Seen 10: the header error names what was read and what was expected."""
    rows, rejections = parse_workers_csv("INSS|Name|Employer\n1|2|3\n")
    assert rows == []
    assert rejections[0].line == 1
    assert "missing column(s) inss, name, employer, capacity" in rejections[0].reason
    assert "expected inss,name,employer,capacity" in rejections[0].reason


def test_parse_never_quotes_an_inss_and_keeps_file_order() -> None:
    text = (
        "inss,name,employer,capacity\n"
        f"{ANA},Ana,{EMPLOYER},employee\n"
        f"{BOB},Bob,{ANA},employee\n"  # an INSS typed in the employer column
        f"{ANA},Ana again,{EMPLOYER},employee\n"
    )
    rows, rejections = parse_workers_csv(text)
    assert [r.line for r in rows] == [2]
    assert [r.line for r in rejections] == [3, 4]
    assert all(ANA not in str(r) for r in rejections)
    assert ANA not in repr(rows[0].row)


def test_unknown_workplace_row_is_refused_and_good_rows_are_kept(workers: Workers) -> None:
    """Seen 7: an unknown workplace in a CSV row is refused (row named); the good rows are
    kept and the report says so; the unknown workplace is not created."""
    text = (
        "inss,name,employer,capacity,badge,workplace\n"
        f"{ANA},Ana,{EMPLOYER},employee,04A1B2C3,{WP}\n"
        f"{BOB},Bob,{EMPLOYER},employee,04A1B2C4,{WP_UNKNOWN}\n"
    )
    report = workers.import_csv(text)
    assert report.accepted == 1
    assert [(r.line, r.reason.split(" ")[0]) for r in report.rejected] == [(3, "workplace:")]
    assert WP_UNKNOWN in report.rejected[0].reason
    assert "good rows were saved" in report.text()
    assert not workers.registry.has_workplace(WP_UNKNOWN)
    assert workers.registry.roster_for(WP_UNKNOWN) == []
    # Bob was not half-imported: no worker, no badge
    assert workers.registry.resolve("nfc-a:04A1B2C4") is None
    assert not workers.registry.worker(worker_ref(workers.ref_key, BOB))


def test_listing_shows_workers_without_a_badge(workers: Workers) -> None:
    """Seen 10: `workers list` showed only badges; a worker with none was invisible."""
    workers.import_csv(
        "inss,name,employer,capacity,badge,workplace\n"
        f"{ANA},Ana,{EMPLOYER},employee,04A1B2C3,{WP}\n"
        f"{BOB},Bob,{EMPLOYER},employee,,{WP}\n"
    )
    listed = {w.name: w.badges for w in workers.registry.listing(WP)}
    assert listed == {"Ana": [("nfc-a:04A1B2C3", True)], "Bob": []}
    assert workers.registry.listing(WP2) == []
    assert len(workers.registry.listing()) == 2


def test_unblock_and_remove(workers: Workers) -> None:
    """Seen 10: a blocked badge can be unblocked; a worker can be removed (badges and
    assignments with them); removing someone unknown says so."""
    ref = workers.import_csv(
        f"inss,name,employer,capacity,badge,workplace\n{ANA},Ana,{EMPLOYER},employee,04A1B2C3,{WP}\n"
    ) and worker_ref(workers.ref_key, ANA)
    workers.block_badge("04A1B2C3")
    assert workers.registry.resolve("nfc-a:04A1B2C3") is None
    workers.registry.unblock_badge("nfc-a:04A1B2C3")
    assert workers.registry.resolve("nfc-a:04A1B2C3").worker_ref == ref  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="not enrolled"):
        workers.registry.unblock_badge("nfc-a:0A0B0C0D")
    version = workers.registry.version
    workers.registry.remove_worker(ref)
    assert workers.registry.version > version
    assert workers.registry.worker(ref) is None
    assert workers.registry.listing() == []
    assert workers.registry.badge_blocked("nfc-a:04A1B2C3") is False  # gone, not blocked
    with pytest.raises(RegistryError, match="unknown worker"):
        workers.registry.remove_worker(ref)


def test_crew_moves_to_another_worksite_without_retyping(workers: Workers) -> None:
    """Seen 10: moving a crew means one command, not retyping every INSS."""
    workers.import_csv(
        "inss,name,employer,capacity,badge,workplace\n"
        f"{ANA},Ana,{EMPLOYER},employee,04A1B2C3,{WP}\n"
        f"{BOB},Bob,{EMPLOYER},employee,04A1B2C4,{WP}\n"
    )
    ana, bob = worker_ref(workers.ref_key, ANA), worker_ref(workers.ref_key, BOB)
    assert workers.registry.move_workers(WP, WP2, workers=[ana]) == [ana]
    assert {e.worker for e in workers.registry.roster_for(WP2)} == {ana}
    assert {e.worker for e in workers.registry.roster_for(WP)} == {bob}
    assert workers.registry.move_workers(WP, WP2, keep=True) == [bob]
    assert {e.worker for e in workers.registry.roster_for(WP)} == {bob}
    assert {e.worker for e in workers.registry.roster_for(WP2)} == {ana, bob}
    with pytest.raises(RegistryError, match="unknown workplace"):
        workers.registry.move_workers(WP2, WP_UNKNOWN)
    with pytest.raises(RegistryError, match="not on the roster"):
        workers.registry.move_workers(WP, WP2, workers=[ana])


def test_a_worker_with_taps_on_their_way_is_not_removed(workers: Workers, tmp_path: Path) -> None:
    """Removal would strand a tap the relay still needs the INSS for: refused, nothing gone."""
    import time

    from tests.support.inbox import TerminalFeed, insert

    workers.import_csv(
        f"inss,name,employer,capacity,badge,workplace\n{ANA},Ana,{EMPLOYER},employee,04A1B2C3,{WP}\n"
    )
    ref = worker_ref(workers.ref_key, ANA)
    db_path = tmp_path / "gw.db"  # the registry's file, which the intake fills too
    insert(db_path, [TerminalFeed("t-hall-01", WP).event("in", "nfc-a:04A1B2C3", time.time_ns())])
    with pytest.raises(RegistryError, match="1 tap"):
        workers.registry.remove_worker(ref)
    assert workers.registry.worker(ref) is not None
    assert workers.registry.resolve("nfc-a:04A1B2C3") is not None
