"""Which clients a mailing goes to: both lists must match, an empty list matches anything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.filters import matches_filter

codes = st.text(alphabet="0123456789", min_size=3, max_size=3)
tags = st.text(max_size=12)


@pytest.mark.parametrize(
    ("operator_codes", "tag_list", "expected"),
    [
        ([], [], True),
        (["912"], [], True),
        (["916"], [], False),
        ([], ["vip"], True),
        ([], ["other"], False),
        (["912", "916"], ["vip", "new"], True),
        (["912"], ["other"], False),  # must match both lists
        (["916"], ["vip"], False),
    ],
)
def test_matches_filter_table(
    operator_codes: list[str], tag_list: list[str], expected: bool
) -> None:
    assert (
        matches_filter(operator_code="912", tag="vip", operator_codes=operator_codes, tags=tag_list)
        is expected
    )


def test_tag_matching_is_exact_not_substring_or_case_insensitive() -> None:
    assert not matches_filter(operator_code="912", tag="vip", operator_codes=[], tags=["VIP"])
    assert not matches_filter(operator_code="912", tag="vip", operator_codes=[], tags=["vi"])
    assert not matches_filter(operator_code="912", tag="vip", operator_codes=[], tags=["vip "])


def test_empty_tag_matches_only_an_empty_tag_in_the_list() -> None:
    assert matches_filter(operator_code="912", tag="", operator_codes=[], tags=[""])
    assert not matches_filter(operator_code="912", tag="", operator_codes=[], tags=["vip"])


@given(codes, tags)
def test_empty_lists_match_every_client(operator_code: str, tag: str) -> None:
    assert matches_filter(operator_code=operator_code, tag=tag, operator_codes=[], tags=[])


@given(codes, tags, st.lists(codes, max_size=5), st.lists(tags, max_size=5))
def test_matches_filter_is_the_conjunction_of_both_lists(
    operator_code: str, tag: str, operator_codes: list[str], tag_list: list[str]
) -> None:
    code_ok = not operator_codes or operator_code in operator_codes
    tag_ok = not tag_list or tag in tag_list
    assert matches_filter(
        operator_code=operator_code, tag=tag, operator_codes=operator_codes, tags=tag_list
    ) is (code_ok and tag_ok)


@given(codes, tags, st.lists(codes, max_size=5), st.lists(tags, max_size=5))
def test_listing_the_clients_own_values_always_matches(
    operator_code: str, tag: str, operator_codes: list[str], tag_list: list[str]
) -> None:
    assert matches_filter(
        operator_code=operator_code,
        tag=tag,
        operator_codes=[*operator_codes, operator_code],
        tags=[*tag_list, tag],
    )
