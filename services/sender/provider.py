"""Client of the external sending API (the provider), and what each answer means.

POST {PROVIDER_URL}/send/{msgId} with `Authorization: Bearer <token>` and
{"id": msgId, "phone": 7XXXXXXXXXX, "text": ...}; only 200 {"code": 0, "message": "OK"} is
success. Timeouts, connection errors, 5xx, 429 and malformed 200s are retryable; 400/404/422
fail the message for good; 401/403 mean our token is wrong or expired.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

from shared import metrics


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # the provider may accept it later
    REJECTED = "rejected"  # the provider refuses this message for good
    UNAUTHORIZED = "unauthorized"  # our token is wrong or expired: not the message's fault


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    error: str | None = None
    retry_after: float | None = None


PERMANENT_STATUSES = frozenset({400, 404, 422})
AUTH_STATUSES = frozenset({401, 403})


def classify(status: int, body: bytes, retry_after: str | None) -> SendResult:
    if status == 200:
        if _is_ok_body(body):
            return SendResult(Outcome.SENT)
        return SendResult(Outcome.RETRY, f"200 with unexpected body: {body[:200]!r}")
    if status in AUTH_STATUSES:
        return SendResult(Outcome.UNAUTHORIZED, f"HTTP {status}: {body[:200]!r}")
    if status in PERMANENT_STATUSES:
        return SendResult(Outcome.REJECTED, f"HTTP {status}: {body[:200]!r}")
    return SendResult(
        Outcome.RETRY, f"HTTP {status}: {body[:200]!r}", parse_retry_after(retry_after)
    )


def _is_ok_body(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and type(data.get("code")) is int
        and data["code"] == 0
        and data.get("message") == "OK"
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date counts as unknown)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class TokenSource:
    """The provider's bearer token, from settings or a file re-read when it changes."""

    def __init__(self, token: str | None, token_file: Path | None) -> None:
        self._static = token
        self._file = token_file
        self._mtime: float | None = None
        self._value: str | None = token
        metrics.PROVIDER_TOKEN_EXPIRY.set(jwt_expiry(token) or 0)
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the token changed."""
        if self._file is None:
            return False
        try:
            mtime = self._file.stat().st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        value = self._file.read_text().strip() or None
        changed = value != self._value
        self._value = value
        if changed:
            metrics.PROVIDER_TOKEN_EXPIRY.set(jwt_expiry(value) or 0)
        return changed

    @property
    def value(self) -> str | None:
        return self._value


def jwt_expiry(token: str | None) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only for the expiry metric)."""
    if token is None or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class ProviderClient:
    def __init__(
        self, base_url: str, tokens: TokenSource, *, timeout_s: float, max_connections: int
    ) -> None:
        self.tokens = tokens
        self.timeout_s = timeout_s
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # httpx's API over aiohttp's transport: about six times the default transport's rate.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(timeout_s),
            limits=limits,
        )

    async def send(self, message_id: int, phone: str, text: str, time_left_s: float) -> SendResult:
        """One request, never running past the mailing's end time (`time_left_s` from now)."""
        timeout = min(self.timeout_s, time_left_s)
        if timeout <= 0:
            return SendResult(Outcome.RETRY, "end time reached")
        token = self.tokens.value
        if token is None:
            return SendResult(Outcome.UNAUTHORIZED, "no provider token configured")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.post(
                    f"/send/{message_id}",
                    json={"id": message_id, "phone": int(phone), "text": text},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=timeout,
                )
        except TimeoutError:
            result = SendResult(Outcome.RETRY, f"timed out after {timeout:.1f}s")
        except httpx.TimeoutException:
            result = SendResult(Outcome.RETRY, f"timed out after {timeout:.1f}s")
        except httpx.HTTPError as exc:
            result = SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        else:
            result = classify(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        metrics.PROVIDER_LATENCY.observe(time.perf_counter() - started)
        metrics.PROVIDER_REQUESTS.labels(result.outcome.value).inc()
        return result

    async def close(self) -> None:
        await self._http.aclose()
