"""How many provider requests a sender runs at once: a slow start up to MAX_CONNECTIONS.

A sender that does not yet know the provider to be healthy (at start, after the breaker opened)
starts with a few requests and adds one per answer, up to the maximum: a healthy provider gets
full concurrency within a few round trips, a provider that is down meets a handful of requests
before the breaker opens rather than a whole micro-batch. Failures do not shrink the limit (the
breaker judges a failing provider). Waiters are served in order (a `Gate`).
"""

from __future__ import annotations

from services.sender.gate import Gate


class ConcurrencyLimit:
    def __init__(self, *, initial: int, maximum: int) -> None:
        self.maximum = maximum
        self.initial = max(1, min(initial, maximum))
        self._gate = Gate(self.initial)

    @property
    def limit(self) -> int:
        return self._gate.size

    @property
    def in_use(self) -> int:
        return self._gate.used

    async def acquire(self) -> None:
        await self._gate.take()

    def release(self) -> None:
        self._gate.give()

    def grow(self) -> None:
        """The provider answered: allow one more request at once."""
        if self.limit < self.maximum:
            self._gate.resize(self.limit + 1)

    def reset(self) -> None:
        """The provider is failing: start slowly again once it is back."""
        self._gate.resize(self.initial)
