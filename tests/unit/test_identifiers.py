"""INSS/BIS, enterprise number, foreign VAT and Declaration of Works checks."""

from __future__ import annotations

import pytest

from siteclock.gateway.identifiers import (
    InvalidIdentifier,
    inss_check_digits,
    is_valid_inss,
    normalize_enterprise_number,
    normalize_foreign_vat,
    normalize_inss,
    normalize_workplace,
)


def test_inss_before_2000_uses_plain_modulo() -> None:
    # 93.05.18-223.61 is the example the Belgian register publishes for a 1993 birth.
    assert 97 - 930518223 % 97 == 61
    assert normalize_inss("93.05.18-223.61") == "93051822361"


def test_inss_born_2000_or_later_needs_the_2_prefix() -> None:
    first9 = "010203123"
    plain, y2k = inss_check_digits(first9), inss_check_digits(first9, born_2000_or_later=True)
    assert plain != y2k
    assert normalize_inss(first9 + y2k) == first9 + y2k
    # With the pre-2000 digits it is also valid (a 1901 birth): both centuries are accepted.
    assert is_valid_inss(first9 + plain)
    wrong = f"{(int(y2k) + 1) % 100:02d}"
    if wrong != plain:
        assert not is_valid_inss(first9 + wrong)


def test_bis_number_month_plus_20_or_40() -> None:
    for month in ("21", "41"):
        first9 = f"85{month}15001"
        assert is_valid_inss(first9 + inss_check_digits(first9))


@pytest.mark.parametrize(
    "value",
    ["9305182236", "930518223610", "93051822362", "93131822361", "abcdefghijk", ""],
)
def test_inss_rejects_bad_shape_or_digits(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize_inss(value)
    assert info.value.kind == "inss"
    assert "93051822" not in str(info.value)  # the number itself is never in the message


def test_enterprise_number_mod97() -> None:
    # 0403.170.701 is a real, public enterprise number: 97 - (04031707 mod 97) = 01.
    assert normalize_enterprise_number("BE 0403.170.701") == "0403170701"
    assert normalize_enterprise_number("403170701") == "0403170701"  # old 9-digit form
    with pytest.raises(InvalidIdentifier):
        normalize_enterprise_number("0403170702")
    with pytest.raises(InvalidIdentifier):
        normalize_enterprise_number("2403170701")


def test_foreign_vat_shape() -> None:
    assert normalize_foreign_vat("nl 8123.45678.B01") == "NL812345678B01"
    for bad in ("BE0403170701", "N1234", "FR1"):
        with pytest.raises(InvalidIdentifier):
            normalize_foreign_vat(bad)


def test_declaration_of_works_reference() -> None:
    assert normalize_workplace(" 1y1003sq5vssz ") == "1Y1003SQ5VSSZ"
    for bad in ("1Y1003SQ5VSSO", "1Y1003SQ5VSS", "1I1003SQ5VSSZ"):
        with pytest.raises(InvalidIdentifier):
            normalize_workplace(bad)
