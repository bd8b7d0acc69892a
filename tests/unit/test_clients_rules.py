"""Client directory rules: phone numbers, operator codes, time zones, masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.clients import (
    default_operator_code,
    is_valid_operator_code,
    is_valid_phone,
    is_valid_timezone,
    mask_phone,
)

ten_digits = st.text(alphabet="0123456789", min_size=10, max_size=10)


@pytest.mark.parametrize("phone", ["79123456789", "70000000000", "79999999999"])
def test_valid_phones(phone: str) -> None:
    assert is_valid_phone(phone)


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "7",
        "7912345678",  # 10 digits
        "791234567890",  # 12 digits
        "89123456789",  # national prefix 8
        "+79123456789",
        "7 912 345 67 89",
        "7912345678a",
        "79123456789\n",  # `$` must not accept a trailing newline
        "\n79123456789",
        "7９１２３４５６７８９",  # full-width digits are Unicode digits but not ASCII
        "7١٢٣٤٥٦٧٨٩٠",  # Arabic-Indic digits
    ],
)
def test_invalid_phones(phone: str) -> None:
    assert not is_valid_phone(phone)


@given(ten_digits)
def test_any_seven_plus_ten_ascii_digits_is_a_phone(rest: str) -> None:
    assert is_valid_phone("7" + rest)


@given(st.text(max_size=14))
def test_phone_rule_is_exactly_the_regex(candidate: str) -> None:
    expected = (
        len(candidate) == 11 and candidate[0] == "7" and all(ch in "0123456789" for ch in candidate)
    )
    assert is_valid_phone(candidate) is expected


@pytest.mark.parametrize("code", ["000", "912", "999"])
def test_valid_operator_codes(code: str) -> None:
    assert is_valid_operator_code(code)


@pytest.mark.parametrize("code", ["", "91", "9123", "91a", " 912", "912\n", "٩١٢"])
def test_invalid_operator_codes(code: str) -> None:
    assert not is_valid_operator_code(code)


def test_default_operator_code_is_digits_two_to_four() -> None:
    assert default_operator_code("79123456789") == "912"
    assert default_operator_code("70001112233") == "000"


@given(ten_digits)
def test_default_operator_code_of_any_phone_is_a_valid_code(rest: str) -> None:
    phone = "7" + rest
    code = default_operator_code(phone)
    assert code == rest[:3]
    assert is_valid_operator_code(code)


@pytest.mark.parametrize(
    "name", ["Europe/Moscow", "Asia/Kolkata", "America/New_York", "UTC", "Asia/Kathmandu"]
)
def test_known_timezones(name: str) -> None:
    assert is_valid_timezone(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "europe/moscow",  # names are case-sensitive
        "Europe/Moscow ",
        "+03:00",
        "MSK",
        "../etc/passwd",
        "/etc/localtime",
        "Europe/",
        "Europe/Moscow\x00",
    ],
)
def test_unknown_timezones(name: str) -> None:
    assert not is_valid_timezone(name)


def test_mask_phone_keeps_operator_code_and_last_two_digits() -> None:
    masked = mask_phone("79123456789")
    assert masked == "7912*****89"
    assert "34567" not in masked
    assert len(masked) == 11


@pytest.mark.parametrize("value", ["", "7912", "791234567890", "x"])
def test_mask_phone_of_odd_input_reveals_nothing(value: str) -> None:
    assert mask_phone(value) == "***"


@given(ten_digits)
def test_mask_phone_never_reveals_the_middle(rest: str) -> None:
    phone = "7" + rest
    masked = mask_phone(phone)
    assert masked[:4] == phone[:4]
    assert masked[-2:] == phone[-2:]
    assert masked[4:9] == "*****"
