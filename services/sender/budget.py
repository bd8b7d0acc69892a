"""A counted budget of claimed messages, so a sender claims only what it can start soon.

A message's `sending` lease starts at the claim: claims far ahead of the connections could let a
lease lapse while its message waits, and the reaper would hand it to another sender (a duplicate
send). With at most twice `MAX_CONNECTIONS` claimed, every claimed message starts within about
two request timeouts. A batch takes its share before claiming and hands it back message by
message as each request ends, so the next batch claims while this one's results are written.
"""

from __future__ import annotations

from services.sender.gate import Gate


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
        self._gate = Gate(size)

    async def take(self, count: int) -> Share:
        """Wait, in turn, until `count` (at most the whole budget) is free, and take it."""
        count = min(count, self.size)
        await self._gate.take(count)
        return Share(self, count)

    def give(self, count: int) -> None:
        self._gate.give(count)

    @property
    def free(self) -> int:
        return self._gate.free
