"""Binding a terminal to a Declaration of Works: typed references, QR-code URLs, locations."""

from __future__ import annotations

import pytest

from siteclock.provisioning.shared.workplace import (
    Address,
    Coordinates,
    ForeignQrCode,
    WorkplaceBinding,
    WorkplaceError,
    parse_reference,
    parse_workplace_input,
    reference_from_url,
)

REF = "1Y1003SQ5VSSZ"


@pytest.mark.parametrize(
    "typed",
    [REF, "1y1003sq5vssz", " 1Y10-03SQ-5VSSZ ", "1Y1 003 SQ5 VSSZ", "1Y10.03SQ.5VSSZ"],
)
def test_typed_reference_is_normalised(typed: str) -> None:
    assert parse_reference(typed) == REF


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("1Y1003SQ5VSS", "12 characters"),
        ("1Y1003SQ5VSSZZ", "14 characters"),
        ("1Y1OO3SQ5VSSZ", "letters I and O"),
        ("IY1003SQ5VSSZ", "letters I and O"),
        ("1Y1003SQ5VSS#", "'#'"),
        ("", "no Declaration of Works reference"),
        ("   ", "no Declaration of Works reference"),
    ],
)
def test_malformed_reference_says_what_is_wrong(typed: str, says: str) -> None:
    with pytest.raises(WorkplaceError, match=says):
        parse_reference(typed)


@pytest.mark.parametrize(
    "url",
    [
        f"https://www.socialsecurity.be/ciao/qr?ref={REF}",
        f"https://ciao.socialsecurity.be/workplace/{REF}",
        f"https://www.rsz.be/x#dow={REF}",
        f"www.socialsecurity.be/site/{REF}",
    ],
)
def test_nsso_qr_url_carrying_the_reference_is_accepted(url: str) -> None:
    assert parse_workplace_input(url) == REF


@pytest.mark.parametrize(
    "url",
    [
        f"https://example.com/ciao?ref={REF}",
        f"https://socialsecurity.be.evil.example/{REF}",
        f"https://evilsocialsecurity.be/{REF}",
        "https://wa.me/32470000000",
    ],
)
def test_qr_url_from_another_service_is_refused_clearly(url: str) -> None:
    with pytest.raises(ForeignQrCode, match="not a Declaration of Works"):
        parse_workplace_input(url)


def test_nsso_url_without_reference_asks_to_type_it() -> None:
    with pytest.raises(WorkplaceError, match="Type the reference printed"):
        reference_from_url("https://www.socialsecurity.be/ciao/qr?tn=12345678")


def test_lower_case_url_token_is_not_mistaken_for_a_reference() -> None:
    with pytest.raises(WorkplaceError, match="no 13-character"):
        reference_from_url("https://www.socialsecurity.be/s/1y1003sq5vssz")


def test_nsso_url_with_two_references_is_ambiguous() -> None:
    with pytest.raises(WorkplaceError, match="several possible references"):
        reference_from_url(f"https://www.socialsecurity.be/{REF}?other=2Y1003SQ5VSSZ")


def test_plain_http_nsso_url_is_refused() -> None:
    with pytest.raises(WorkplaceError, match="not https"):
        reference_from_url(f"http://www.socialsecurity.be/{REF}")


def test_coordinates_parse_and_swapped_hint() -> None:
    assert Coordinates.parse("50.8503, 4.3517") == Coordinates(50.8503, 4.3517)
    assert Coordinates.parse("50.8503 4.3517") == Coordinates(50.8503, 4.3517)
    with pytest.raises(WorkplaceError, match="look swapped"):
        Coordinates.parse("4.3517, 50.8503")
    with pytest.raises(WorkplaceError, match="not in Belgium"):
        Coordinates.parse("48.85, 2.35")
    with pytest.raises(WorkplaceError, match="decimal numbers"):
        Coordinates.parse("fifty, four")


def test_address_checks_belgian_post_code_and_maps_to_ciao() -> None:
    address = Address("Rue Haute", "12", "1000", "Bruxelles", box="3")
    assert address.to_ciao() == {
        "streetName": "Rue Haute",
        "houseNumber": "12",
        "postCode": "1000",
        "municipalityName": "Bruxelles",
        "boxNumber": "3",
    }
    with pytest.raises(WorkplaceError, match="post code"):
        Address("Rue Haute", "12", "75001", "Paris")
    with pytest.raises(WorkplaceError, match="lacks street"):
        Address(" ", "12", "1000", "Bruxelles")


def test_binding_needs_a_location_and_round_trips() -> None:
    with pytest.raises(WorkplaceError, match="coordinates or its address"):
        WorkplaceBinding(REF)
    binding = WorkplaceBinding(REF, Coordinates(50.85, 4.35), Address("A", "1", "9000", "Gent"))
    assert WorkplaceBinding.from_map(binding.to_map()) == binding


def test_label_qr_names_terminal_and_worksite(tmp_path) -> None:
    from siteclock.provisioning.terminal.label import LabelInfo, parse_label, qr_code, write_label

    info = LabelInfo("t-hall-01", REF, "3f2a9c0d1e2b4a5f", "Hall A")
    assert parse_label(info.uri()) == LabelInfo("t-hall-01", REF, "3f2a9c0d1e2b4a5f")
    assert qr_code(info).is_micro is False
    svg = write_label(tmp_path / "label.svg", info).read_text()
    assert "terminal t-hall-01" in svg
    assert f"DoW {REF}" in svg
    assert write_label(tmp_path / "label.png", info).read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="not a siteclock terminal label"):
        parse_label(f"https://example.com/?id=t-hall-01&workplace={REF}")
