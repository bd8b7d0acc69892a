"""How many send jobs to keep in the broker: enough work for a while, never more than the
senders drain before the lease expires.

A fixed window is wrong both ways: too small starves fast senders, too large leaves jobs
waiting in the queue past their lease, so the reaper re-publishes messages that were never
lost. The window follows the measured drain rate (live leases that ended per second) and holds
`horizon_s` seconds of work, between `minimum` and `maximum`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SendWindow:
    def __init__(
        self,
        *,
        minimum: int,
        maximum: int,
        horizon_s: float,
        clock: Callable[[], float] = time.monotonic,
        smoothing: float = 0.3,
    ) -> None:
        self.minimum = min(minimum, maximum)
        self.maximum = maximum
        self.horizon_s = horizon_s
        self.clock = clock
        self.smoothing = smoothing
        self.rate: float | None = None  # messages per second leaving the window
        self._last: tuple[float, int] | None = None  # (when, live leases then)
        self._leased_since = 0

    def observe(self, live: int) -> None:
        """Record the live-lease count; call before leasing more."""
        now = self.clock()
        if self._last is not None:
            then, live_then = self._last
            elapsed = now - then
            # A window empty all along measures demand, not the senders' speed: skip it.
            if elapsed > 0 and live_then + self._leased_since > 0:
                drained = max(live_then + self._leased_since - live, 0)
                sample = drained / elapsed
                self.rate = (
                    sample
                    if self.rate is None
                    else self.rate + self.smoothing * (sample - self.rate)
                )
        self._last = (now, live)
        self._leased_since = 0

    def leased(self, count: int) -> None:
        self._leased_since += count

    @property
    def size(self) -> int:
        if self.rate is None:
            return self.minimum
        return max(self.minimum, min(self.maximum, int(self.rate * self.horizon_s)))
