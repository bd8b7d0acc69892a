"""A mailing's times: its end comes after its start and, as it is set or acted on, in the future.

`now` is the database's clock (`shared.db.database_now`), the one the scheduler and the
senders end a mailing by; the request schemas check the order alone, which needs no clock.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class TimeRule(StrEnum):
    END_AFTER_START = "end_at must be after start_at"
    END_IN_FUTURE = "end_at must be in the future"


def broken_time_rule(
    *, end_at: datetime, start_at: datetime | None = None, now: datetime | None = None
) -> TimeRule | None:
    """The first rule the times break, or None. Without `start_at` the order is not checked,
    without `now` the end may have passed (a mailing's end time is kept as it was)."""
    if start_at is not None and end_at <= start_at:
        return TimeRule.END_AFTER_START
    if now is not None and end_at <= now:
        return TimeRule.END_IN_FUTURE
    return None
