"""A counted budget of claimed messages, so a sender claims only what it can start soon.

A message's `sending` lease starts at the claim; if claims ran far ahead of the connections,
a lease could lapse while its message still waits for one, and the reaper would hand it to
another sender: a duplicate send. With at most twice `MAX_CONNECTIONS` claimed, every claimed
message starts within about two request timeouts, well inside the lease.
"""

from __future__ import annotations

import asyncio


class ClaimBudget:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._changed = asyncio.Condition()

    async def take(self, count: int) -> None:
        count = min(count, self.size)
        async with self._changed:
            await self._changed.wait_for(lambda: self._free >= count)
            self._free -= count

    async def give(self, count: int) -> None:
        async with self._changed:
            self._free = min(self._free + count, self.size)
            self._changed.notify_all()

    @property
    def free(self) -> int:
        return self._free
