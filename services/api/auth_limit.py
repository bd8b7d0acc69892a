"""Failed authentication, rate-limited per source address: a wrong API token, a console
sign-in callback that fails. After AUTH_FAILURES_PER_MINUTE failures from one address within a
minute, that address is answered 429 (Retry-After) without its token being checked, until the
minute is over. Per replica, in memory: a guesser spread over replicas gets a multiple of it,
never the millions of tries a second an open endpoint allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter
from starlette.requests import Request

from services.api.errors import TooManyRequests

AUTH_FAILURES = Counter(
    "mailing_api_auth_failures_total",
    "Failed authentications (a wrong API token, a failed console sign-in callback)",
    ["kind"],
)
AUTH_THROTTLED = Counter(
    "mailing_api_auth_throttled_total",
    "Requests refused with 429 because their address failed authentication too often",
    ["kind"],
)
WINDOW_S = 60.0
MAX_ADDRESSES = 10_000  # past this, windows that are over are dropped (memory stays bounded)


class FailedAuthLimiter:
    def __init__(self, per_window: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window = per_window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def _current(self, address: str) -> tuple[float, int]:
        start, failures = self._windows.get(address, (0.0, 0))
        if self._clock() - start >= WINDOW_S:
            return self._clock(), 0
        return start, failures

    def retry_after_s(self, address: str) -> int | None:
        """Seconds this address must wait, or None when it may try."""
        start, failures = self._current(address)
        if failures < self.per_window:
            return None
        return max(1, int(WINDOW_S - (self._clock() - start)) + 1)

    def check(self, address: str, kind: str) -> None:
        """429 while `address` has used up its failures of this minute."""
        wait = self.retry_after_s(address)
        if wait is not None:
            AUTH_THROTTLED.labels(kind).inc()
            raise TooManyRequests(
                f"too many failed authentications from this address; try again in {wait} s", wait
            )

    def failed(self, address: str, kind: str) -> None:
        AUTH_FAILURES.labels(kind).inc()
        if len(self._windows) >= MAX_ADDRESSES:
            now = self._clock()
            self._windows = {a: w for a, w in self._windows.items() if now - w[0] < WINDOW_S}
        start, failures = self._current(address)
        self._windows[address] = (start, failures + 1)


def source_address(request: Request) -> str:
    """The client's address (uvicorn takes it from X-Forwarded-For only when the peer is one of
    FORWARDED_ALLOW_IPS)."""
    return request.client.host if request.client else "unknown"


def failed_auth(request: Request) -> FailedAuthLimiter:
    limiter: FailedAuthLimiter = request.app.state.failed_auth
    return limiter
