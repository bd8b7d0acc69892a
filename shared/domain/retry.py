"""Retry policy: which delay tier a failed send waits in, and whether it still has time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta


def retry_delay(attempt: int, delays: Sequence[float], retry_after: float | None = None) -> float:
    """The delay tier for the `attempt`-th failure (1-based): the ladder climbs one tier a
    failure, and a `Retry-After` takes the smallest tier that covers it (or the longest)."""
    tier = min(max(attempt, 1), len(delays)) - 1
    delay = delays[tier]
    if retry_after is not None and retry_after > delay:
        delay = next((d for d in delays if d >= retry_after), delays[-1])
    return delay


def can_retry_before_end(
    now: datetime, delay: float, end_at: datetime, safety_margin: float
) -> bool:
    """A retry is worth queueing only if it comes back before the last moment to send."""
    return now + timedelta(seconds=delay) < end_at - timedelta(seconds=safety_margin)
