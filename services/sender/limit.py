"""How many provider requests a sender runs at once: a slow start up to MAX_CONNECTIONS.

A sender that does not yet know the provider to be healthy (at start, and after the breaker
opened) starts with a few requests at a time and adds one per answer the provider gives, up to
the maximum: the limit doubles with every round of answers, so a healthy provider gets full
concurrency within a few round trips, while a provider that is down meets a handful of
requests before the breaker opens rather than a whole micro-batch at once. Failures do not
shrink the limit (a share of errors is normal, and the breaker judges a failing provider).

Waiters are served in order and woken one per free slot, never all at once.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ConcurrencyLimit:
    def __init__(self, *, initial: int, maximum: int) -> None:
        self.maximum = maximum
        self.initial = max(1, min(initial, maximum))
        self.limit = self.initial
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot came just as the wait was cancelled: pass it on
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def grow(self) -> None:
        """The provider answered: allow one more request at once."""
        if self.limit < self.maximum:
            self.limit += 1
            self._wake()

    def reset(self) -> None:
        """The provider is failing: start slowly again once it is back."""
        self.limit = self.initial

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)
