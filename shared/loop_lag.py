"""How late the event loop runs: the lag a CPU-starved or busy process sees.

A task sleeps `interval_s` again and again; how much later than asked it wakes is the loop's
lag, the time a ready callback waits for its turn. It goes to a Prometheus histogram, and the
largest lag of the last `window_s` is kept for readers (`recent_s`). It matters because the
HTTP client writes a request a loop turn after the sender's end-time check
(`shared.domain.end_time`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Histogram


class LoopLag:
    def __init__(
        self,
        histogram: Histogram | None = None,
        *,
        interval_s: float = 0.05,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.histogram = histogram
        self.interval_s = interval_s
        self.window_s = window_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, lag)
        self.recent_s = 0.0  # the largest lag seen in the last `window_s`
        self.max_s = 0.0  # the largest lag seen since the start

    def record(self, lag_s: float, now: float) -> None:
        lag_s = max(lag_s, 0.0)
        if self.histogram is not None:
            self.histogram.observe(lag_s)
        self.max_s = max(self.max_s, lag_s)
        samples = self._samples
        samples.append((now, lag_s))
        while samples and samples[0][0] < now - self.window_s:
            samples.popleft()
        self.recent_s = max(lag for _, lag in samples)

    async def run(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.interval_s)
            woke = self.clock()
            self.record(woke - asked - self.interval_s, woke)
