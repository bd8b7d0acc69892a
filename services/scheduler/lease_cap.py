"""The lease cap: how many messages to keep leased (queued in the broker or being sent): enough
work for a while, never more than the senders drain before the lease expires.

(Not to be confused with a mailing's send window, the client's local hours in
`shared.domain.send_window`. This was called the "send window" until it was renamed.)

A fixed cap is wrong both ways: too small starves fast senders, too large leaves jobs
waiting in the queue past their lease, so the reaper re-publishes messages that were never
lost. The cap follows the measured drain rate (live leases that ended per second) and holds
`horizon_s` seconds of work, between `minimum` and `maximum`.

The horizon is short (a couple of seconds, `cap_horizon_s`): the send queue is FIFO, so a
new mailing's first jobs wait behind whatever the cap holds of the others' work.

A cap the senders empty measures only what it let through, not what the senders could
take: measured as is, a cap too small would shrink itself further. So when a full cap
drains (almost) dry between two looks, it doubles instead, up to `maximum`.

Before any rate is measured the cap is `initial` (the scheduler starts it at a couple of
thousand, not at the minimum): a short mailing on a freshly started system would otherwise
go out in rounds of the minimum while the cap learns the senders' pace. The first samples move
the rate away from the one the initial cap stands for (`initial / horizon_s`) by the time they
cover, like any other: the first look, milliseconds after the first lease, sees nothing drained
yet, and when it replaced the rate outright the cap fell to its minimum and a 2,000-client
mailing's last 20 messages waited 1.6 s for room (docs/BENCHMARKS.md).

Two ways the measured rate ran ahead of the senders (the chaos test of a window drained
slower than its lease, which once saw 3,190 re-publishes for 5,000 messages):
- The scheduler looks again within milliseconds while it is topping up, and results land in
  batches: 20 messages finished in the 10 ms between two looks is a sample of 2,000/s. Each
  sample used to weigh the same, so one such look lifted the cap from 230 to about 1,000 at
  185 sends/s: more than the 5 s lease's worth, so its tail lapsed in the queue. A sample
  now weighs by the time it covers (`time_constant_s`).
- A lease that lapsed unclaimed left the live count as if a sender had finished it, so the
  lapses the oversized cap caused counted as drain and kept it oversized (and a whole cap
  lapsing looked like a cap drained dry, which doubles it). The drain is now measured on the
  outstanding leases (queued or sending, lapsed or not) and the messages newly leased, not
  on the live ones: re-publishing a lapsed lease neither adds nor drains.
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
