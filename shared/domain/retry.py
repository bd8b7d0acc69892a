"""Retry policy: which delay tier a failed send waits in.

A failure the provider gave one message (a 500, a timeout, a garbage answer while others go
through) is retried soon: the shipped ladder holds at a few seconds for several attempts and
climbs to minutes only for a message that keeps failing. A provider failing as a whole is the
breaker's business: its messages are released without spending an attempt and wait for the
breaker's cooldown, not for the ladder. Whether a retry still fits before the end time is
`shared.domain.end_time.may_start(..., after_s=delay)`.
"""

from __future__ import annotations

from collections.abc import Sequence

# The shipped ladder (RETRY_DELAYS_S): isolated failures come back within seconds; only a
# message failing twelve times in a row (at 40% random failures, 1 in 60,000) waits minutes.
# Its close short tiers (3, 4, 6 beside 8) are what the jitter spreads retries over.
DEFAULT_RETRY_DELAYS_S = (1.0, 2.0, 3.0, 4.0, 6.0, *(8.0,) * 7, 30.0, 120.0, 600.0)
# Spread of the jitter: a delay is drawn from [1 - JITTER, 1 + JITTER] times its tier.
JITTER = 0.5


def retry_delay(
    attempt: int,
    delays: Sequence[float],
    retry_after: float | None = None,
    *,
    jitter: float = 1.0,
) -> float:
    """The delay tier for the `attempt`-th failure (1-based).

    The ladder climbs one tier a failure. `jitter` (a factor drawn from [1 - JITTER,
    1 + JITTER]; 1.0: none) spreads retries of failures that came together: the delay becomes
    the tier nearest to `jitter` times the ladder's tier (retry queues exist per tier, so the
    spread is at tier granularity). A `Retry-After` takes the smallest tier that covers it (or
    the longest), jitter or not.
    """
    tier = min(max(attempt, 1), len(delays)) - 1
    delay = delays[tier]
    if jitter != 1.0:
        wanted = delay * jitter
        delay = min(delays, key=lambda d: (abs(d - wanted), d))
    if retry_after is not None and retry_after > delay:
        delay = next((d for d in delays if d >= retry_after), delays[-1])
    return delay
