"""The end-time rule: no request starts within the margin of the end, none runs past it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.domain.end_time import (
    MAX_JOB_TTL_S,
    job_ttl_s,
    last_start_at,
    may_start,
    may_start_at,
    request_timeout_s,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_may_start_only_before_end_less_margin() -> None:
    assert may_start(100.0, 2.0)
    assert may_start(100.0, 2.0, after_s=97.9)
    assert not may_start(100.0, 2.0, after_s=98.0)  # exactly the last moment
    assert not may_start(2.0, 2.0)
    assert not may_start(0.0, 0.0)
    assert not may_start(-3600.0, 0.0)


def test_may_start_at_with_moments() -> None:
    end = NOW + timedelta(seconds=100)
    assert may_start_at(NOW, end, 2.0)
    assert not may_start_at(NOW + timedelta(seconds=98), end, 2.0)
    assert not may_start_at(NOW, NOW, 0.0)


@given(
    st.floats(min_value=0, max_value=10_000, allow_nan=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.integers(min_value=-10_000, max_value=10_000),
)
def test_both_forms_agree(delay: float, margin: float, end_offset: int) -> None:
    end = NOW + timedelta(seconds=end_offset)
    at = NOW + timedelta(seconds=delay)
    expected = at < end - timedelta(seconds=margin)
    assert may_start_at(at, end, margin) is expected
    # The float form counts seconds; allow for timedelta's microsecond rounding at the edge.
    if abs((end - timedelta(seconds=margin) - at).total_seconds()) > 1e-5:
        assert may_start(float(end_offset), margin, after_s=delay) is expected


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.floats(min_value=-100, max_value=10_000, allow_nan=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.floats(min_value=0, max_value=10_000, allow_nan=False),
)
def test_the_last_start_is_where_may_start_turns_false(
    now: float, left: float, margin: float, later: float
) -> None:
    """A client re-checking `last_start_at` later agrees with `may_start` asked then."""
    deadline = last_start_at(now, left, margin)
    if abs(deadline - (now + later)) > 1e-6:
        assert (now + later < deadline) is may_start(left, margin, after_s=later)


def test_no_timeout_runs_past_the_end() -> None:
    assert request_timeout_s(10.0, 3.5) == 3.5
    assert request_timeout_s(10.0, 30.0) == 10.0
    assert request_timeout_s(10.0, -1.0) <= 0


def test_job_ttl_is_the_time_left_within_bounds() -> None:
    assert job_ttl_s(12.5) == 12.5
    assert job_ttl_s(-5.0) == 0.001
    assert job_ttl_s(10**9) == MAX_JOB_TTL_S
