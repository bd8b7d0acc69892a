"""A rate limiter on the event loop: this replica's share of a provider's `max_tps`.

GCRA (the virtual-scheduling form of a token bucket): each message moves a theoretical
arrival time on by 1/rate, and may go once that time is less than `burst_s` ahead of now. So a
burst is a tenth of a second of the rate, no wall-clock second sees more than the rate plus
10 % from this replica, and the rate may change at any time (a new
share after a heartbeat). Callers are served in order; each waits once, no polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        *,
        burst_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._burst_s = burst_s
        self._lock = asyncio.Lock()
        self.rate = rate
        self._tat = clock()  # when the next message is due at exactly the rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value <= 0:
            raise ValueError("a rate must be above 0")
        self._rate = value

    async def acquire(self, count: int = 1) -> None:
        """Wait until `count` messages (a long text's parts) may go. A text of more parts
        than the burst goes at once when its turn comes; the messages after it pay for it."""
        async with self._lock:  # in order: a long text does not wait behind later short ones
            now = self._clock()
            # The burst counts the message that starts it: rate + 10 % in any second, no more.
            tolerance = max(0.0, self._burst_s - 1 / self._rate)
            wait = self._tat - tolerance - now
            self._tat = max(self._tat, now) + count / self._rate
            if wait > 0:
                await asyncio.sleep(wait)
