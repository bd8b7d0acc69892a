"""Pure: when the next report runs and which day it covers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest

from services.reporter.schedule import day_bounds, next_run_at, report_day

SIX = time(6, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 10, 5, 59, 59, tzinfo=UTC), datetime(2026, 3, 10, 6, 0, tzinfo=UTC)),
        (datetime(2026, 3, 10, 6, 0, tzinfo=UTC), datetime(2026, 3, 11, 6, 0, tzinfo=UTC)),
        (datetime(2026, 3, 10, 6, 0, 1, tzinfo=UTC), datetime(2026, 3, 11, 6, 0, tzinfo=UTC)),
        (datetime(2026, 3, 10, 23, 0, tzinfo=UTC), datetime(2026, 3, 11, 6, 0, tzinfo=UTC)),
        # Month and year ends.
        (datetime(2026, 2, 28, 7, 0, tzinfo=UTC), datetime(2026, 3, 1, 6, 0, tzinfo=UTC)),
        (datetime(2026, 12, 31, 12, 0, tzinfo=UTC), datetime(2027, 1, 1, 6, 0, tzinfo=UTC)),
        # The time of day is UTC whatever the offset `now` carries: 08:00+03:00 is 05:00 UTC.
        (
            datetime(2026, 3, 10, 8, 0, tzinfo=timezone(timedelta(hours=3))),
            datetime(2026, 3, 10, 6, 0, tzinfo=UTC),
        ),
    ],
)
def test_next_run_at(now: datetime, expected: datetime) -> None:
    assert next_run_at(now, SIX) == expected


def test_midnight_report_time() -> None:
    now = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    assert next_run_at(now, time(0, 0)) == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        next_run_at(datetime(2026, 3, 10, 5, 0), SIX)


def test_report_covers_the_previous_utc_day() -> None:
    assert report_day(datetime(2026, 3, 11, 6, 0, tzinfo=UTC)) == date(2026, 3, 10)
    assert report_day(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)) == date(2025, 12, 31)
    start, end = day_bounds(date(2026, 3, 10))
    assert start == datetime(2026, 3, 10, tzinfo=UTC)
    assert end - start == timedelta(days=1)
