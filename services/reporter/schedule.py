"""When the loop mode runs, and the clock it reads (injectable for tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def next_run_at(now: datetime, at: time) -> datetime:
    """The first moment strictly after `now` whose UTC time of day is `at`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    candidate = datetime.combine(now.date(), at.replace(tzinfo=None), tzinfo=UTC)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate


def report_day(run_at: datetime) -> date:
    """The day a run reports on: the UTC day before the run."""
    return (run_at.astimezone(UTC) - timedelta(days=1)).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)
