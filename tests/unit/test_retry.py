"""Retry policy: the delay ladder, jitter and Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.retry import DEFAULT_RETRY_DELAYS_S, JITTER, retry_delay

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


@given(
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=1 - JITTER, max_value=1 + JITTER, allow_nan=False),
)
def test_jitter_picks_the_tier_nearest_the_jittered_delay(attempt: int, jitter: float) -> None:
    delays = list(DEFAULT_RETRY_DELAYS_S)
    delay = retry_delay(attempt, delays, jitter=jitter)
    assert delay in delays
    wanted = delays[min(attempt, len(delays)) - 1] * jitter
    assert all(abs(delay - wanted) <= abs(d - wanted) for d in delays)


def test_jitter_spreads_retries_over_neighbouring_tiers() -> None:
    delays = list(DEFAULT_RETRY_DELAYS_S)
    assert retry_delay(6, delays, jitter=1.0) == 8.0
    assert retry_delay(6, delays, jitter=0.5) == 4.0
    assert retry_delay(6, delays, jitter=0.75) == 6.0
    assert retry_delay(4, delays, jitter=0.5) == 2.0
    assert retry_delay(4, delays, jitter=1.5) == 6.0
    assert retry_delay(1, delays, jitter=1.5) in (1.0, 2.0)


def test_retry_after_wins_over_jitter() -> None:
    assert retry_delay(1, list(DEFAULT_RETRY_DELAYS_S), 20.0, jitter=0.5) == 30.0


def test_shipped_ladder_stays_short_for_isolated_failures() -> None:
    """With 40% of answers failing at random, about 1 message in 60,000 fails twelve times in
    a row: the first twelve waits add up to well under two minutes, the first five to under
    half a minute."""
    assert sum(DEFAULT_RETRY_DELAYS_S[:12]) <= 90
    assert sum(DEFAULT_RETRY_DELAYS_S[:5]) <= 25
    assert list(DEFAULT_RETRY_DELAYS_S) == sorted(DEFAULT_RETRY_DELAYS_S)
