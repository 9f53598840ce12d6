"""Employer CSV import: every row checked, each rejection reported with its line and reason."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.registry import Registry
from siteclock.provisioning.gateway.workers import (
    WorkerError,
    Workers,
    load_or_create_ref_key,
    worker_ref,
)

WP = "1Y1003SQ5VSSZ"


def inss(first9: str, *, good: bool = True) -> str:
    check = inss_check_digits(first9)
    if not good:
        check = f"{(int(check) + 1) % 100:02d}"
    return first9 + check


def enterprise(first8: str) -> str:
    return first8 + enterprise_check_digits(first8)


ANA, BOB, CAR = inss("850101123"), inss("900215045"), inss("780330217")
EMPLOYER = enterprise("04035742")


@pytest.fixture
def workers(tmp_path: Path) -> Workers:
    registry = Registry(tmp_path / "gw.db", tmp_path / "inss.key")
    registry.add_workplace(WP, latitude=50.85, longitude=4.35)
    yield Workers(registry, load_or_create_ref_key(tmp_path / "ref.key"))
    registry.close()


def test_good_rows_are_imported_and_bad_rows_reported(workers: Workers) -> None:
    text = (
        "inss,name,employer,capacity,badge,workplace\n"
        f"{ANA},Ana Peeters,{EMPLOYER},employee,04A1B2C3,{WP}\n"
        f"{inss('900215045', good=False)},Bob Bad,{EMPLOYER},employee,,\n"
        f"{CAR},Carla Sub,DE123456789,self-employed,nfc-a:0A0B0C0D,{WP}\n"
        f"{BOB},Bob Dup Badge,{EMPLOYER},employee,04a1b2c3,{WP}\n"
        f"{ANA},Ana Twin,{EMPLOYER},employee,,\n"
        f"{inss('610405310')},No Employer,0403574200,employee,,\n"
        f"{inss('610405310')},Wrong Capacity,{EMPLOYER},boss,,\n"
        f"{inss('610405310')},Wrong Place,{EMPLOYER},employee,,1Y1003SQ5VSSO\n"
    )
    report = workers.import_csv(text)
    assert report.accepted == 2
    reasons = {r.line: r.reason for r in report.rejected}
    assert sorted(reasons) == [3, 5, 6, 7, 8, 9]
    assert reasons[3].startswith("inss: check digits")
    assert "also on line 2" in reasons[5]
    assert "same person as line 2" in reasons[6]
    assert reasons[7].startswith("employer:")
    assert reasons[8].startswith("capacity:")
    assert reasons[9].startswith("workplace:")
    # the INSS never appears in a rejection, even a wrong one
    assert not any(inss("900215045", good=False) in r.reason for r in report.rejected)
    assert report.workplaces == {WP}

    ana = workers.registry.resolve("nfc-a:04A1B2C3")
    assert ana is not None
    assert ana.name == "Ana Peeters"
    assert ana.inss.reveal() == ANA
    carla = workers.registry.resolve("nfc-a:0A0B0C0D")
    assert carla is not None
    assert carla.employer.id == "DE123456789"  # a subcontractor's worker: their own employer
    assert carla.capacity == "self_employed"
    roster = workers.registry.roster_for(WP)
    assert {e.badge for e in roster} == {"nfc-a:04A1B2C3", "nfc-a:0A0B0C0D"}
    assert all(ANA not in repr(e) for e in roster)


def test_reimport_updates_instead_of_duplicating(workers: Workers) -> None:
    header = "inss,name,employer,capacity\n"
    assert workers.import_csv(header + f"{ANA},Ana P,{EMPLOYER},employee\n").accepted == 1
    assert workers.import_csv(header + f"{ANA},Ana Peeters,{EMPLOYER},employee\n").accepted == 1
    ref = worker_ref(workers.ref_key, ANA)
    workers.link_badge("04A1B2C3", ref)
    resolved = workers.registry.resolve("nfc-a:04A1B2C3")
    assert resolved is not None
    assert resolved.name == "Ana Peeters"


def test_header_problems_reject_the_file(workers: Workers) -> None:
    report = workers.import_csv("inss,name,employer,capacty\n" + f"{ANA},A,{EMPLOYER},employee\n")
    assert report.accepted == 0
    assert report.rejected[0].line == 1
    assert "missing column(s) capacity" in report.rejected[0].reason
    assert "unknown column(s) capacty" in report.rejected[0].reason


def test_duplicate_badge_across_workers_and_blocking(workers: Workers) -> None:
    header = "inss,name,employer,capacity,badge\n"
    workers.import_csv(header + f"{ANA},Ana,{EMPLOYER},employee,04A1B2C3\n")
    report = workers.import_csv(header + f"{BOB},Bob,{EMPLOYER},employee,04A1B2C3\n")
    assert report.accepted == 0
    assert "already linked to another worker" in report.rejected[0].reason
    workers.block_badge("04A1B2C3")
    assert workers.registry.resolve("nfc-a:04A1B2C3") is None
    with pytest.raises(WorkerError, match="not linked"):
        workers.block_badge("04A1B2C3")
    with pytest.raises(WorkerError, match="not a UID"):
        workers.link_badge("zz-top", worker_ref(workers.ref_key, ANA))


def test_worker_references_never_look_like_an_inss() -> None:
    """About 3 % of 16-hex-digit references hold a run of exactly 11 digits, which the roster
    guard must treat as an INSS: such a worker would never reach a terminal. Derived again,
    they never do; references that never looked like one stay what they were."""
    from siteclock.inss_shape import WRITTEN_INSS_RE

    key = bytes(range(32))
    rederived = 0
    for n in range(600):
        birth = f"{80 + n % 20:02d}0101"
        serial = f"{n % 997:03d}"
        base = int(birth + serial)
        inss = f"{birth}{serial}{97 - base % 97:02d}"
        ref = worker_ref(key, inss)
        assert not WRITTEN_INSS_RE.search(ref), ref
        first = "w-" + hmac.new(key, inss.encode(), hashlib.sha256).hexdigest()[:16]
        if ref != first:
            rederived += 1
            assert WRITTEN_INSS_RE.search(first)
    assert rederived > 0  # the sample holds some references the old derivation got wrong
