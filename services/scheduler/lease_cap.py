"""The lease cap: how many messages to keep leased (queued in the broker or being sent): enough
work for a while, never more than the senders drain before the lease expires. It follows the
measured drain rate to hold `horizon_s` seconds of work, between `minimum` and `maximum`: short,
because the send queue is FIFO and a new mailing's first jobs wait behind what it holds.

- A cap the senders empty measures only what it let through: a full cap drained (almost) dry
  between two looks doubles instead of trusting the rate.
- Before any rate is known the cap is `initial`; samples move the rate by the time they cover
  (`time_constant_s`), so a look milliseconds after a lease cannot swing it.
- The drain is measured on outstanding leases (lapsed ones too), so a lapse never reads as a
  sender finishing work. (Why, with the figures: docs/benchmarks/ and the commit history.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# A cap is "drained dry" when at most this share of it is still live at the next look.
DRAINED_FRACTION = 0.1
# How much a full cap that drained dry grows at once.
GROWTH = 2.0


def cap_horizon_s(lease_ttl_s: float, cap_s: float) -> float:
    """Seconds of work to hold: a few (`cap_s`), and never more than a quarter of the lease, so
    jobs are claimed long before their lease lapses."""
    return min(lease_ttl_s / 4, cap_s)


class LeaseCap:
    def __init__(
        self,
        *,
        minimum: int,
        maximum: int,
        horizon_s: float,
        clock: Callable[[], float] = time.monotonic,
        time_constant_s: float = 1.0,
        initial: int | None = None,
    ) -> None:
        self.minimum = min(minimum, maximum)
        self.maximum = maximum
        self.initial = self.minimum if initial is None else max(self.minimum, min(initial, maximum))
        self.horizon_s = horizon_s
        self.clock = clock
        # How fast the rate follows the samples: a sample covering `elapsed` seconds moves it
        # by 1 - exp(-elapsed / time_constant_s) of the way (0: each sample replaces it).
        self.time_constant_s = time_constant_s
        self.rate: float | None = None  # messages per second leaving the cap
        self._last: tuple[float, int] | None = None  # (when, outstanding leases then)
        self._leased_since = 0

    def observe(self, live: int) -> None:
        """Record the outstanding leases (queued or being sent, lapsed ones too: they are not
        drained, only not yet re-published); call before leasing more."""
        now = self.clock()
        if self._last is not None:
            then, live_then = self._last
            elapsed = now - then
            held = live_then + self._leased_since  # the most that was live meanwhile
            # A cap empty all along measures demand, not the senders' speed: skip it.
            if elapsed > 0 and held > 0:
                size = self.size
                drained = max(held - live, 0)
                sample = drained / elapsed
                weight = (
                    1.0
                    if self.time_constant_s <= 0
                    else 1.0 - math.exp(-elapsed / self.time_constant_s)
                )
                # Before any sample, the rate the initial cap stands for: the first look comes
                # milliseconds after the first lease, before any sender has finished a message,
                # and taken as is it collapsed the cap to its minimum on a fresh system.
                prior = self.initial / self.horizon_s if self.rate is None else self.rate
                rate = prior + weight * (sample - prior)
                # The cap was full and the senders emptied it: they waited for work, so
                # they can take more than was measured. Grow rather than spiral down.
                if held >= size and live <= size * DRAINED_FRACTION:
                    rate = max(rate, GROWTH * size / self.horizon_s)
                self.rate = rate
        self._last = (now, live)
        self._leased_since = 0

    def leased(self, count: int) -> None:
        """Messages newly leased (not lapsed leases re-published: those were outstanding)."""
        self._leased_since += count

    @property
    def size(self) -> int:
        if self.rate is None:
            return self.initial
        return max(self.minimum, min(self.maximum, int(self.rate * self.horizon_s)))
