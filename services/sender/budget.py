"""A counted budget of claimed messages, so a sender claims only what it can start soon.

A message's `sending` lease starts at the claim; if claims ran far ahead of the connections,
a lease could lapse while its message still waits for one, and the reaper would hand it to
another sender: a duplicate send. With at most twice `MAX_CONNECTIONS` claimed, every claimed
message starts within about two request timeouts, well inside the lease.

A batch takes its share before claiming and hands it back message by message as each request
ends (or at once for messages it does not send), so the next batch claims while the results
of this one are still being written.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Share:
    """The part of the budget one batch holds."""

    def __init__(self, budget: ClaimBudget, count: int) -> None:
        self._budget = budget
        self.left = count

    def give(self, count: int = 1) -> None:
        count = min(count, self.left)
        if count > 0:
            self.left -= count
            self._budget.give(count)

    def give_all(self) -> None:
        self.give(self.left)


class ClaimBudget:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, count: int) -> Share:
        """Wait, in turn, until `count` (at most the whole budget) is free, and take it."""
        count = min(count, self.size)
        if not self._waiters and self._free >= count:
            self._free -= count
            return Share(self, count)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give(count)  # granted just as the wait was cancelled
            raise
        return Share(self, count)

    def give(self, count: int) -> None:
        self._free = min(self._free + count, self.size)
        while self._waiters:
            wanted, waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if self._free < wanted:
                break
            self._waiters.popleft()
            self._free -= wanted
            waiter.set_result(None)

    @property
    def free(self) -> int:
        return self._free
