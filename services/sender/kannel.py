"""Client for a provider of kind `kannel`: smsbox's `cgi-bin/sendsms` (docs/PROVIDERS.md).

Kannel's POST form: the text in the body (UTF-8), everything else in `X-Kannel-*` headers, so
the password never lands in an access log's URL. Each message asks for its receipt at
`{callback_base_url}{CALLBACK_PATH}` with our message id and a signature (HMAC-SHA256 under the
provider's `callback_secret`): only the gateway, which got the URL from us, can report it.
`validity` (whole minutes, rounded down) carries the mailing's end time to the SMSC.
Kannel asks the SMSC for a receipt on a long text's first part only: one receipt per message.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from services.sender.curl import MAY_HAVE_ARRIVED, CurlMulti, TransferError
from services.sender.smpp import SubmitOutcome, SubmitResult, record_outcome
from shared.domain.sms_text import encoding_of, segment_count
from shared.providers import KannelProvider

# Where the gateway reports receipts: the api serves it (the lead wires the endpoint).
CALLBACK_PATH = "/api/v1/receipts/kannel/{provider}"
# Kannel's dlr types (%d): 1 delivered to the phone, 2 not delivered to the phone,
# 4 queued on the SMSC, 8 accepted by the SMSC, 16 refused by the SMSC.
DLR_DELIVERED, DLR_UNDELIVERED, DLR_QUEUED, DLR_SMSC_ACK, DLR_SMSC_NACK = 1, 2, 4, 8, 16
DLR_MASK = DLR_DELIVERED | DLR_UNDELIVERED | DLR_SMSC_NACK  # final outcomes only


def callback_signature(secret: str, provider: str, message_id: str) -> str:
    mac = hmac.new(secret.encode(), f"{provider}:{message_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def verify_callback(provider: KannelProvider, message_id: str, signature: str) -> bool:
    expected = callback_signature(
        provider.callback_secret.get_secret_value(), provider.name, message_id
    )
    return hmac.compare_digest(expected, signature)


def dlr_url(provider: KannelProvider, message_id: str) -> str:
    """The URL Kannel calls with the receipt; `%d` and `%A` are Kannel's (type, SMSC text)."""
    signature = callback_signature(
        provider.callback_secret.get_secret_value(), provider.name, message_id
    )
    query = urlencode({"id": message_id, "sig": signature})
    base = provider.callback_base_url.rstrip("/") + CALLBACK_PATH.format(provider=provider.name)
    return f"{base}?{query}&type=%d&reply=%A"


@dataclass(frozen=True, slots=True)
class KannelReceipt:
    provider: str
    message_id: str  # ours: Kannel reports by the id we put in the dlr-url
    dlr_type: int
    reply: str  # the SMSC's receipt text, e.g. "id:... stat:DELIVRD err:000"

    @property
    def final(self) -> bool:
        return self.dlr_type in (DLR_DELIVERED, DLR_UNDELIVERED, DLR_SMSC_NACK)

    @property
    def delivered(self) -> bool:
        return self.dlr_type == DLR_DELIVERED


def parse_callback(provider: KannelProvider, params: Mapping[str, str]) -> KannelReceipt | None:
    """The receipt in a dlr-url call's query, or None when it is not genuine or malformed
    (the endpoint answers 403 / 400 and changes nothing)."""
    message_id, signature, kind = params.get("id"), params.get("sig"), params.get("type")
    if not message_id or not signature or not verify_callback(provider, message_id, signature):
        return None
    if kind is None or not kind.isdigit():
        return None
    return KannelReceipt(provider.name, message_id, int(kind), params.get("reply", ""))


def validity_minutes(valid_until: datetime, now: datetime | None = None) -> int:
    """Whole minutes left (rounded down: the SMSC must stop before the end, never after)."""
    left = (valid_until - (now or datetime.now(UTC))).total_seconds()
    return max(0, math.floor(left / 60))


class KannelClient:
    def __init__(
        self, provider: KannelProvider, curl: CurlMulti, *, timeout_s: float = 10.0
    ) -> None:
        self.provider = provider
        self.curl = curl
        self.timeout_s = timeout_s

    def _headers(
        self, message_id: str, destination: str, text: str, minutes: int | None
    ) -> list[str]:
        headers = [
            "Content-Type: text/plain; charset=UTF-8",
            f"X-Kannel-Username: {self.provider.username}",
            f"X-Kannel-Password: {self.provider.password.get_secret_value()}",
            f"X-Kannel-From: {self.provider.source_addr}",
            f"X-Kannel-To: {destination}",
            f"X-Kannel-DLR-Mask: {DLR_MASK}",
            f"X-Kannel-DLR-Url: {dlr_url(self.provider, message_id)}",
        ]
        if encoding_of(text) == "UCS-2":
            headers.append("X-Kannel-Coding: 2")
        if minutes is not None:
            headers.append(f"X-Kannel-Validity: {minutes}")
        return headers

    async def submit(
        self,
        message_id: str,
        destination: str,
        text: str,
        *,
        valid_until: datetime | None = None,
    ) -> SubmitResult:
        """Hand one message to smsbox. ACCEPTED carries our own id: Kannel's receipts come
        back by it."""
        started = time.monotonic()
        result = await self._submit(message_id, destination, text, valid_until)
        record_outcome(self.provider.name, result, time.monotonic() - started)
        return result

    async def _submit(
        self, message_id: str, destination: str, text: str, valid_until: datetime | None
    ) -> SubmitResult:
        parts = segment_count(text)
        minutes = None
        if valid_until is not None:
            minutes = validity_minutes(valid_until)
            if minutes < 1:
                return SubmitResult(
                    SubmitOutcome.EXPIRED, parts=parts, error="under a minute to its end time"
                )
        headers = self._headers(message_id, destination, text, minutes)
        started = time.monotonic()
        try:
            answer = await self.curl.post(
                self.provider.url, text.encode(), headers, timeout_s=self.timeout_s
            )
        except TransferError as exc:
            outcome = (
                SubmitOutcome.UNKNOWN
                if exc.kind in MAY_HAVE_ARRIVED or time.monotonic() - started >= self.timeout_s
                else SubmitOutcome.UNAVAILABLE
            )
            return SubmitResult(outcome, parts=parts, error=exc.kind)
        body = answer.body.decode("utf-8", "replace").strip()
        if 200 <= answer.status < 300:
            # "0: Accepted for delivery", or "3: Queued for later delivery" (SMSC down: Kannel
            # keeps it; the validity still holds the end time).
            return SubmitResult(SubmitOutcome.ACCEPTED, (message_id,), parts)
        error = f"HTTP {answer.status}: {body[:200]}"
        if answer.status in (401, 403):
            return SubmitResult(SubmitOutcome.UNAVAILABLE, parts=parts, error=error)  # the account
        if answer.status == 400:
            return SubmitResult(SubmitOutcome.PERMANENT, parts=parts, error=error)
        return SubmitResult(SubmitOutcome.TRANSIENT, parts=parts, error=error)
