"""A counted gate: units are taken and given back, never more in use than its size (which may
change). Waiters are served in the order they came and woken only when their count fits, one
future each, never all at once."""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        return self.size - self.used

    async def take(self, count: int = 1) -> None:
        if not self._waiters and self.used + count <= self.size:
            self.used += count
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give(count)  # granted just as the wait was cancelled: pass it on
            raise

    def give(self, count: int = 1) -> None:
        self.used = max(self.used - count, 0)
        self._wake()

    def resize(self, size: int) -> None:
        self.size = size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            count, waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if self.used + count > self.size:
                break
            self._waiters.popleft()
            self.used += count
            waiter.set_result(None)
