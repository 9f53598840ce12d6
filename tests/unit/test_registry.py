"""The worker registry: badge -> worker, INSS encrypted at rest and never printed."""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
from pathlib import Path

import pytest

from siteclock.gateway.identifiers import InvalidIdentifier
from siteclock.gateway.registry import EmployerKind, Inss, Registry, RegistryError
from tests.support.ciao import make_enterprise, make_inss

DOW = "1Y1003SQ5VSSZ"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "gateway.db", tmp_path / "inss.key")
    reg.add_workplace(DOW, latitude=50.85, longitude=4.35)
    yield reg
    reg.close()


def test_resolve_badge_to_worker_employer_and_inss(registry: Registry) -> None:
    inss = make_inss(17)
    registry.add_worker("w-17", "An Peeters", inss=inss, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:04A1B2C3", "w-17")
    found = registry.resolve("nfc-a:04A1B2C3")
    assert found is not None
    assert found.worker_ref == "w-17"
    assert found.name == "An Peeters"
    assert found.inss.reveal() == inss
    assert found.employer.id == make_enterprise(1)
    assert found.employer.kind is EmployerKind.ENTERPRISE
    assert registry.resolve("nfc-a:FFFFFFFF") is None


def test_subcontractor_worker_has_own_foreign_employer(registry: Registry) -> None:
    registry.add_worker(
        "w-pl",
        "Jan Kowalski",
        inss=make_inss(3),
        employer="PL5260250274",
        employer_kind="foreign_vat",
    )
    registry.enrol_badge("em4100:0A0B0C0D0E", "w-pl")
    found = registry.resolve("em4100:0A0B0C0D0E")
    assert found is not None
    assert found.employer.kind is EmployerKind.FOREIGN_VAT


def test_invalid_identifiers_are_refused(registry: Registry) -> None:
    bad_inss = make_inss(5)[:-1] + ("0" if make_inss(5)[-1] != "0" else "1")
    with pytest.raises(InvalidIdentifier):
        registry.add_worker("w-1", "X", inss=bad_inss, employer=make_enterprise(1))
    with pytest.raises(InvalidIdentifier):
        registry.add_worker("w-1", "X", inss=make_inss(5), employer="0123456789")
    with pytest.raises(InvalidIdentifier):
        registry.add_workplace("NOT-A-DOW", latitude=1, longitude=1)
    with pytest.raises(RegistryError):
        registry.add_workplace("1Y1003SQ5VSSA")  # neither coordinates nor address


def test_inss_is_encrypted_at_rest_and_key_file_is_0600(tmp_path: Path, registry: Registry) -> None:
    inss = make_inss(42)
    registry.add_worker("w-42", "B", inss=inss, employer=make_enterprise(2))
    raw = (tmp_path / "gateway.db").read_bytes() + (tmp_path / "gateway.db-wal").read_bytes()
    assert inss.encode() not in raw
    assert os.stat(tmp_path / "inss.key").st_mode & 0o777 == 0o600


def test_ciphertext_moved_to_another_row_does_not_decrypt(
    tmp_path: Path, registry: Registry
) -> None:
    registry.add_worker("w-a", "A", inss=make_inss(1), employer=make_enterprise(1))
    registry.add_worker("w-b", "B", inss=make_inss(2), employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:0B", "w-b")
    db = sqlite3.connect(tmp_path / "gateway.db")
    with db:
        db.execute(
            "UPDATE reg_workers SET inss_enc=(SELECT inss_enc FROM reg_workers "
            "WHERE ref='w-a') WHERE ref='w-b'"
        )
    db.close()
    with pytest.raises(RegistryError):
        registry.resolve("nfc-a:0B")


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "loose.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with pytest.raises(RegistryError, match="0600"):
        Registry(tmp_path / "x.db", key)


def test_inss_never_printed(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    inss = make_inss(9)
    registry.add_worker("w-9", "C", inss=inss, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:09", "w-9")
    found = registry.resolve("nfc-a:09")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("resolved %s %r", found, found)
    assert inss not in repr(found)
    assert inss not in str(found)
    assert inss not in f"{found.inss}"
    assert inss not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(Inss(inss))


def test_roster_has_names_and_blocked_flags_never_inss(registry: Registry) -> None:
    inss = make_inss(11)
    registry.add_worker("w-11", "D", inss=inss, employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:11", "w-11")
    registry.enrol_badge("nfc-a:12", "w-11")
    registry.assign("w-11", DOW)
    registry.block_badge("nfc-a:12")
    roster = registry.roster_for(DOW)
    assert [(e.badge, e.worker, e.blocked) for e in roster] == [
        ("nfc-a:11", "w-11", False),
        ("nfc-a:12", "w-11", True),
    ]
    assert inss not in repr(roster)
    assert registry.resolve("nfc-a:12") is None  # blocked badges do not resolve


def test_version_grows_with_every_change(registry: Registry) -> None:
    before = registry.version
    registry.add_worker("w-1", "E", inss=make_inss(1), employer=make_enterprise(1))
    registry.enrol_badge("nfc-a:01", "w-1")
    assert registry.version == before + 2


def test_a_worker_reference_shaped_like_an_inss_is_refused(registry: Registry) -> None:
    """References reach terminals, logs and metrics: one holding 11 digits never gets in."""
    with pytest.raises(RegistryError, match="must not look like an INSS"):
        registry.add_worker(
            "w-85073003328ab", "Ana", inss=make_inss(1), employer=make_enterprise(1)
        )


def test_one_inss_shaped_roster_entry_is_left_out_and_the_rest_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad registry row must not hold back a whole site's roster (it did: the roster
    loop failed for every terminal of the site)."""
    from siteclock.gateway.roster import check_entries
    from siteclock.protocol import RosterEntry

    good = RosterEntry("nfc-a:04A1B2C3", "w-17", "Ana P.")
    bad = RosterEntry("nfc-a:0A0B0C0D", "w-12345678901ab", "Bram C.")
    with caplog.at_level(logging.ERROR):
        assert check_entries([bad, good]) == (good,)
    assert "looks like an INSS" in caplog.text
    assert "12345678901" not in caplog.text
