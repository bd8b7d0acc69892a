"""Circuit breaker for the provider.

Closed: send normally. After `threshold` retryable failures in a row, or any 401/403, open:
stop consuming and send nothing until the cooldown passes (doubling up to a ceiling while
probes keep failing). Half-open: one probe request; success closes, failure opens again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from shared import metrics


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    def __init__(
        self,
        *,
        threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown_s
        self.max_cooldown = max_cooldown_s
        self.clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self.cooldown = cooldown_s
        self.opened_at = 0.0
        self.reason = ""
        metrics.BREAKER_STATE.set(State.CLOSED)

    def _set(self, state: State) -> None:
        self.state = state
        metrics.BREAKER_STATE.set(state)

    @property
    def reopens_at(self) -> float:
        return self.opened_at + self.cooldown

    def allows_traffic(self) -> bool:
        """True when closed, or when an open breaker's cooldown is over (it turns half-open)."""
        if self.state == State.OPEN and self.clock() >= self.reopens_at:
            self._set(State.HALF_OPEN)
        return self.state != State.OPEN

    def record_success(self) -> None:
        self.failures = 0
        self.cooldown = self.base_cooldown
        if self.state != State.CLOSED:
            self._set(State.CLOSED)

    def record_failure(self) -> bool:
        """A retryable failure; True if it opened the breaker."""
        self.failures += 1
        if self.state == State.HALF_OPEN or self.failures >= self.threshold:
            self.open("provider failing")
            return True
        return False

    def open(self, reason: str) -> None:
        if self.state == State.HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
        if self.state != State.OPEN:
            metrics.BREAKER_OPENED.labels(reason).inc()
        self.reason = reason
        self.opened_at = self.clock()
        self.failures = 0
        self._set(State.OPEN)

    def retry_now(self) -> None:
        """Skip the rest of the cooldown (a new provider token arrived)."""
        if self.state == State.OPEN:
            self.opened_at = self.clock() - self.cooldown
