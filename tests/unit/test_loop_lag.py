"""The event-loop lag monitor: how late the loop runs a timer, and the largest lately."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

from shared.loop_lag import LoopLag


def test_recent_is_the_largest_lag_within_the_window() -> None:
    lag = LoopLag(window_s=10.0)
    lag.record(0.2, now=100.0)
    lag.record(0.01, now=101.0)
    assert lag.recent_s == 0.2
    lag.record(0.03, now=110.5)  # the 0.2 s sample is older than the window now
    assert lag.recent_s == 0.03
    assert lag.max_s == 0.2
    lag.record(-0.001, now=111.0)  # a timer cannot run early; clock noise counts as none
    assert lag.recent_s == 0.03


async def test_a_blocked_loop_shows_as_lag_in_the_histogram() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("lag_seconds", "lag", registry=registry, buckets=(0.05, 0.25, 1.0))
    lag = LoopLag(histogram, interval_s=0.01)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # a CPU-bound stretch: nothing else runs meanwhile
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lag.max_s >= 0.25
    assert registry.get_sample_value("lag_seconds_bucket", {"le": "0.25"}) < (
        registry.get_sample_value("lag_seconds_count") or 0
    )
