"""What keeps each scheduler duty apart from the others: a batch size that shrinks when its
statement times out, and a back-off of its own after a failure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveBatch:
    """Rows per statement: halved after a timeout (never the same size for ever), doubled back
    towards `maximum` while full batches finish within `target_s`."""

    maximum: int
    minimum: int = 100
    target_s: float = 1.0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.minimum = min(self.minimum, self.maximum)
        self.size = self.maximum

    def timed_out(self) -> None:
        self.size = max(self.minimum, self.size // 2)

    def finished(self, rows: int, seconds: float) -> None:
        if seconds > self.target_s:
            # Too slow even without a timeout: aim for target_s next time.
            self.size = max(self.minimum, min(self.size, int(rows * self.target_s / seconds)))
        elif rows >= self.size and seconds < self.target_s / 2:
            self.size = min(self.maximum, self.size * 2)


@dataclass
class Backoff:
    """Seconds to wait before a failed duty runs again: `base`, doubling per failure in a row
    up to `ceiling`; back to `base` after a success."""

    base: float
    ceiling: float = 30.0
    failures: int = 0

    def failed(self) -> float:
        self.failures += 1
        return min(self.ceiling, self.base * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures = 0
