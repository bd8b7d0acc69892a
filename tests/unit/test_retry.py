"""Retry policy: the delay ladder, Retry-After, and whether a retry still fits before the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.retry import can_retry_before_end, retry_delay

LADDER = [1.0, 5.0, 30.0, 120.0, 600.0]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 1.0), (2, 5.0), (3, 30.0), (4, 120.0), (5, 600.0), (6, 600.0), (100, 600.0)],
)
def test_ladder_climbs_one_tier_per_failure_and_stays_on_top(attempt: int, expected: float) -> None:
    assert retry_delay(attempt, LADDER) == expected


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_below_one_use_the_first_tier(attempt: int) -> None:
    assert retry_delay(attempt, LADDER) == 1.0


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (1, 0.5, 1.0),  # the tier already covers it
        (1, 1.0, 1.0),
        (1, 3.0, 5.0),  # smallest tier that covers 3 s
        (1, 5.0, 5.0),
        (1, 5.1, 30.0),
        (2, 60.0, 120.0),
        (4, 10.0, 120.0),  # never lower than the ladder's own tier
        (1, 601.0, 600.0),  # nothing covers it: the longest tier
        (1, 0.0, 1.0),
    ],
)
def test_retry_after_takes_the_smallest_covering_tier(
    attempt: int, retry_after: float, expected: float
) -> None:
    assert retry_delay(attempt, LADDER, retry_after) == expected


@given(
    st.integers(min_value=-5, max_value=50),
    st.one_of(st.none(), st.floats(min_value=0, max_value=10_000, allow_nan=False)),
)
def test_retry_delay_properties(attempt: int, retry_after: float | None) -> None:
    delay = retry_delay(attempt, LADDER, retry_after)
    assert delay in LADDER
    tier = LADDER[min(max(attempt, 1), len(LADDER)) - 1]
    assert delay >= tier
    if retry_after is not None:
        # Covers Retry-After whenever some tier can; otherwise the longest tier.
        assert delay >= retry_after or delay == LADDER[-1]
        if delay > tier:
            # It is the smallest tier that covers it.
            assert all(d < retry_after for d in LADDER if d < delay)


def test_single_tier_ladder() -> None:
    assert retry_delay(1, [2.0]) == 2.0
    assert retry_delay(9, [2.0], retry_after=50.0) == 2.0


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_can_retry_when_the_retry_lands_before_end_less_margin() -> None:
    end = NOW + timedelta(seconds=100)
    assert can_retry_before_end(NOW, 30.0, end, safety_margin=2.0)
    assert can_retry_before_end(NOW, 97.9, end, safety_margin=2.0)


def test_cannot_retry_at_or_after_the_last_moment() -> None:
    end = NOW + timedelta(seconds=100)
    assert not can_retry_before_end(NOW, 98.0, end, safety_margin=2.0)  # exactly the last moment
    assert not can_retry_before_end(NOW, 120.0, end, safety_margin=2.0)
    assert not can_retry_before_end(NOW, 1.0, NOW, safety_margin=0.0)
    assert not can_retry_before_end(NOW, 1.0, NOW - timedelta(hours=1), safety_margin=0.0)


@given(
    st.floats(min_value=0, max_value=10_000, allow_nan=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.integers(min_value=-10_000, max_value=10_000),
)
def test_can_retry_before_end_matches_its_definition(
    delay: float, margin: float, end_offset: int
) -> None:
    end = NOW + timedelta(seconds=end_offset)
    expected = NOW + timedelta(seconds=delay) < end - timedelta(seconds=margin)
    assert can_retry_before_end(NOW, delay, end, margin) is expected
    if expected:
        assert end_offset > margin
