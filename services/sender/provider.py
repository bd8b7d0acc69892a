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

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict, istr
from prometheus_client import Counter
from yarl import URL

from shared import metrics
from shared.domain.end_time import END_REACHED, request_timeout_s


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # the provider may accept it later
    REJECTED = "rejected"  # the provider refuses this message for good
    UNAUTHORIZED = "unauthorized"  # our token is wrong or expired: not the message's fault
    NOT_SENT = "not_sent"  # the end time came before the request could be written: not sent


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
        data = orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError is one
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


class _WrittenBefore(aiohttp.BytesPayload):
    """A request body that is not written after `deadline` (time.monotonic()): the end-time
    rule's last start, checked at the moment aiohttp writes the request (headers are buffered
    until the body goes out), not when it was handed the request a loop turn or more earlier."""

    too_late = False

    def __init__(self, body: bytes, deadline: float) -> None:
        super().__init__(body, content_type="application/json")
        self.deadline = deadline

    def _check(self) -> None:
        if time.monotonic() >= self.deadline:
            self.too_late = True
            raise _TooLate

    async def write(self, writer: AbstractStreamWriter) -> None:
        self._check()
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._check()
        await super().write_with_length(writer, content_length)


class _TooLate(Exception):
    pass


_AUTHORIZATION = istr("Authorization")
_CONTENT_TYPE = istr("Content-Type")
# `mailing_provider_requests_total` by outcome, each series made on its first use (as `.labels()`
# would) and then kept: the lookup under the metric's lock is not free per request.
_REQUESTS: dict[Outcome, Counter] = {}


class ProviderClient:
    """Plain aiohttp: one session, one pool of `max_connections` keep-alive connections.

    The session is made on the first request, inside the running event loop. Each request is
    bounded by one `asyncio.timeout` (the session sets no timeouts of its own), so it never runs
    past `min(timeout_s, time_left_s)`.
    """

    def __init__(
        self, base_url: str, tokens: TokenSource, *, timeout_s: float, max_connections: int
    ) -> None:
        self.tokens = tokens
        self.timeout_s = timeout_s
        # POST {base_url}/send/{id}: each request's URL is the base with its path replaced,
        # which is much cheaper than parsing a URL string per request.
        self._base_url = URL(base_url.rstrip("/"))
        self._path_prefix = self._base_url.raw_path.rstrip("/") + "/send/"
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # The request headers, built again only when the token changes.
        self._headers_token: str | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()

    def _new_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("ProviderClient is closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            # httpx.Limits' default keep-alive expiry, which the httpx client used.
            keepalive_timeout=5.0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(),  # no limits: `send` bounds each request itself
        )
        return self._session

    def _headers_for(self, token: str) -> CIMultiDict[str]:
        if token is not self._headers_token:
            self._headers = CIMultiDict(
                {_AUTHORIZATION: f"Bearer {token}", _CONTENT_TYPE: "application/json"}
            )
            self._headers_token = token
        return self._headers

    async def send(
        self,
        message_id: int,
        phone: str,
        text: str,
        time_left_s: float,
        *,
        start_by: float | None = None,
    ) -> SendResult:
        """One request, never running past the mailing's end time (`time_left_s` from now) and
        never written after `start_by` (time.monotonic(); the end-time rule's last start): a
        request the event loop gets to write only later is not sent (`Outcome.NOT_SENT`).
        A replacement client must keep both."""
        timeout = request_timeout_s(self.timeout_s, time_left_s)
        if timeout <= 0 or (start_by is not None and time.monotonic() >= start_by):
            return SendResult(Outcome.NOT_SENT, END_REACHED)
        token = self.tokens.value
        if token is None:
            return SendResult(Outcome.UNAUTHORIZED, "no provider token configured")
        session = self._session if self._session is not None else self._new_session()
        body = b'{"id":%d,"phone":%d,"text":%b}' % (
            message_id,
            int(phone),
            orjson.dumps(text),  # compact UTF-8 JSON, as httpx's `json=` wrote it
        )
        data = body if start_by is None else _WrittenBefore(body, start_by)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                async with session.post(
                    self._base_url.with_path(f"{self._path_prefix}{message_id}", encoded=True),
                    data=data,
                    headers=self._headers_for(token),
                    allow_redirects=False,
                ) as response:
                    content = await response.read()
        except TimeoutError:  # aiohttp's own timeout errors are TimeoutErrors too
            result = SendResult(Outcome.RETRY, f"timed out after {timeout:.1f}s")
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(data, _WrittenBefore) and data.too_late:
                # Nothing was written (aiohttp drops the connection): not a provider request.
                return SendResult(Outcome.NOT_SENT, END_REACHED)
            result = SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        else:
            result = classify(response.status, content, response.headers.get("Retry-After"))
        metrics.PROVIDER_LATENCY.observe(time.perf_counter() - started)
        counter = _REQUESTS.get(result.outcome)
        if counter is None:  # the first request with this outcome
            counter = _REQUESTS[result.outcome] = metrics.PROVIDER_REQUESTS.labels(
                result.outcome.value
            )
        counter.inc()
        return result

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
