"""The mailing time rules: the end after the start, and (given the clock) in the future."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.mailing_times import TimeRule, broken_time_rule

T = datetime(2030, 1, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_the_end_must_come_after_the_start() -> None:
    assert broken_time_rule(start_at=T, end_at=T) is TimeRule.END_AFTER_START
    assert broken_time_rule(start_at=T, end_at=T - HOUR) is TimeRule.END_AFTER_START
    assert broken_time_rule(start_at=T, end_at=T + HOUR) is None


def test_the_end_must_be_in_the_future_only_when_the_clock_is_given() -> None:
    assert broken_time_rule(end_at=T, now=T) is TimeRule.END_IN_FUTURE
    assert broken_time_rule(end_at=T, now=T + HOUR) is TimeRule.END_IN_FUTURE
    assert broken_time_rule(end_at=T, now=T - HOUR) is None
    assert broken_time_rule(end_at=T - HOUR) is None


def test_the_order_is_checked_first() -> None:
    rule = broken_time_rule(start_at=T, end_at=T - HOUR, now=T + HOUR)
    assert rule is TimeRule.END_AFTER_START
    assert rule == "end_at must be after start_at"
