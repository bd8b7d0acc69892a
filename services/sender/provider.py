"""Client of the external sending API (the provider), and what each answer means.

POST {PROVIDER_URL}/send/{msgId} with `Authorization: Bearer <token>` and
{"id": msgId, "phone": 7XXXXXXXXXX, "text": ...}; only 200 {"code": 0, "message": "OK"} is
success. Timeouts, connection errors, 5xx, 429 and malformed 200s are retryable; 400/404/422
fail the message for good; 401/403 mean our token is wrong or expired.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import orjson
from prometheus_client import Counter

from services.sender.curl import NOT_WRITTEN, CurlMulti, TransferError, TransferTimeout
from shared import metrics
from shared.domain.end_time import END_REACHED, request_timeout_s


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # the provider may accept it later
    REJECTED = "rejected"  # the provider refuses this message for good
    UNAUTHORIZED = "unauthorized"  # our token is wrong or expired: not the message's fault
    # The request's last start (the end time's or the lease's) came before it could be written.
    NOT_SENT = "not_sent"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    error: str | None = None
    retry_after: float | None = None
    status: int | None = None  # the HTTP status, when the provider answered


# A request whose `start_by` (the end time's or the lease's last start) passed before it
# could be written: not sent.
NOT_WRITTEN_IN_TIME = "not written: its last start had passed"

PERMANENT_STATUSES = frozenset({400, 404, 422})
AUTH_STATUSES = frozenset({401, 403})


def classify(status: int, body: bytes, retry_after: str | None) -> SendResult:
    if status == 200:
        if _is_ok_body(body):
            return SendResult(Outcome.SENT, status=status)
        return SendResult(Outcome.RETRY, f"200 with unexpected body: {body[:200]!r}", status=status)
    if status in AUTH_STATUSES:
        return SendResult(Outcome.UNAUTHORIZED, f"HTTP {status}: {body[:200]!r}", status=status)
    if status in PERMANENT_STATUSES:
        return SendResult(Outcome.REJECTED, f"HTTP {status}: {body[:200]!r}", status=status)
    return SendResult(
        Outcome.RETRY,
        f"HTTP {status}: {body[:200]!r}",
        parse_retry_after(retry_after),
        status=status,
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


# `mailing_provider_requests_total` by outcome, each series made on its first use (as `.labels()`
# would) and then kept: the lookup under the metric's lock is not free per request.
_REQUESTS: dict[Outcome, Counter] = {}


class ProviderClient:
    """libcurl's multi interface on the event loop (`services.sender.curl`): one pool of
    `max_connections` keep-alive connections, made on the first request.

    Each request is bounded by its own timeout, `min(timeout_s, time_left_s)`, so it never
    runs past the mailing's end.
    """

    def __init__(
        self, base_url: str, tokens: TokenSource, *, timeout_s: float, max_connections: int
    ) -> None:
        self.tokens = tokens
        self.timeout_s = timeout_s
        # POST {base_url}/send/{id}: the base with its path, plus the id per request.
        self._url_prefix = base_url.rstrip("/") + "/send/"
        # httpx.Limits' default keep-alive expiry, which the earlier clients used.
        self._curl = CurlMulti(max_connections=max_connections, keepalive_s=5.0)
        # The request headers, built again only when the token changes.
        self._headers_token: str | None = None
        self._headers: list[str] = []

    def _headers_for(self, token: str) -> list[str]:
        if token is not self._headers_token:
            self._headers = [
                f"Authorization: Bearer {token}",
                "Content-Type: application/json",
                "Expect:",  # no 100-continue round trip for long texts
            ]
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
        never written after `start_by` (time.monotonic(); the end time's or the lease's last
        start): a request the event loop gets to write only later is not sent
        (`Outcome.NOT_SENT`).
        A replacement client must keep both."""
        if self._curl.closed:
            raise RuntimeError("ProviderClient is closed")
        timeout = request_timeout_s(self.timeout_s, time_left_s)
        if timeout <= 0:
            return SendResult(Outcome.NOT_SENT, END_REACHED)
        if start_by is not None and time.monotonic() >= start_by:
            return SendResult(Outcome.NOT_SENT, NOT_WRITTEN_IN_TIME)
        token = self.tokens.value
        if token is None:
            return SendResult(Outcome.UNAUTHORIZED, "no provider token configured")
        body = b'{"id":%d,"phone":%d,"text":%b}' % (
            message_id,
            int(phone),
            orjson.dumps(text),  # compact UTF-8 JSON, as httpx's `json=` wrote it
        )
        started = time.perf_counter()
        try:
            answer = await self._curl.post(
                f"{self._url_prefix}{message_id}",
                body,
                self._headers_for(token),
                timeout_s=timeout,
                start_by=start_by,
            )
        except TransferTimeout:
            result = SendResult(Outcome.RETRY, f"timed out after {timeout:.1f}s")
        except TransferError as exc:
            if exc.kind == NOT_WRITTEN:  # curl wrote nothing: not a provider request
                return SendResult(Outcome.NOT_SENT, NOT_WRITTEN_IN_TIME)
            result = SendResult(Outcome.RETRY, str(exc)[:300])
        else:
            retry_after = answer.header(b"retry-after") if answer.status != 200 else None
            result = classify(answer.status, answer.body, retry_after)
        metrics.PROVIDER_LATENCY.observe(time.perf_counter() - started)
        counter = _REQUESTS.get(result.outcome)
        if counter is None:  # the first request with this outcome
            counter = _REQUESTS[result.outcome] = metrics.PROVIDER_REQUESTS.labels(
                result.outcome.value
            )
        counter.inc()
        return result

    async def close(self) -> None:
        await self._curl.close()
