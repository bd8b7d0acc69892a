"""Kannel's delivery receipts and replies: `GET|POST /api/v1/receipts/kannel/{provider}`
(docs/PROVIDERS.md).

Each message the sender hands to Kannel carries a dlr-url with our message id and a signature
(HMAC-SHA256 under the provider's `callback_secret`, services/sender/kannel.py): the gateway,
which got the URL from us, is the only caller that can report a receipt, so the endpoint takes
no bearer token. A missing or wrong signature is 403, a malformed call 400, an unknown or
non-Kannel provider 404; none of them changes anything.

Kannel's dlr types: 1 delivered, 2 undelivered, 16 refused by the SMSC are final and become a
`Receipt` (our message id is the provider message id the sender stored); 4 (queued) and 8
(accepted by the SMSC) are intermediate and answered 200 without a change.

Replies (MO): smsbox's `sms-service` forwards what phones send to
`GET /api/v1/receipts/kannel/{provider}/replies?sig=…&from=%p&text=%a` (`mo_url()`); the
signature there is fixed per provider (`provider:mo` under the same secret).

Receipts are written in groups: while one group's `apply_receipts` runs, the calls that arrive
queue up and the next one writes them all in one statement; each call answers once its own
receipt has committed, so Kannel never gets a 200 for a receipt that was not stored.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.errors import ApiError
from services.api.providers.state import ProvidersDep
from services.api.schemas import ErrorResponse
from services.sender.kannel import (
    DLR_DELIVERED,
    DLR_SMSC_NACK,
    DLR_UNDELIVERED,
    KannelReceipt,
    callback_signature,
    parse_callback,
)
from shared.providers import KannelProvider, ProvidersConfig
from shared.receipts import Receipt, apply_receipts
from shared.replies import Reply, record_replies

log = structlog.get_logger("api.receipts")

KANNEL_CALLBACKS = Counter(
    "mailing_kannel_callbacks_total",
    "Kannel dlr-url calls to the api, by provider and result "
    "(applied, intermediate, forged, malformed, unknown_provider, reply)",
    ["provider", "result"],
)

MAX_BATCH = 1000
_STAT = re.compile(r"\bstat:(\S+)")
_ERR = re.compile(r"\berr:(\S+)")

router = APIRouter(prefix="/receipts", tags=["receipts"])


class ReceiptAnswer(BaseModel):
    result: str = Field(
        description="applied: the receipt was stored; intermediate: not a final receipt "
        "(queued, accepted by the SMSC), nothing changed",
        examples=["applied"],
    )


def _error_text(receipt: KannelReceipt) -> str | None:
    if receipt.dlr_type == DLR_DELIVERED:
        return None
    stat, err = _STAT.search(receipt.reply), _ERR.search(receipt.reply)
    if receipt.dlr_type == DLR_SMSC_NACK:
        what = "refused by the SMSC"
    else:
        what = stat.group(1) if stat else "undelivered"
    return f"{what} err:{err.group(1)}" if err else what


def to_receipt(receipt: KannelReceipt) -> Receipt | None:
    """The final receipt to store, or None for an intermediate dlr type."""
    if receipt.dlr_type not in (DLR_DELIVERED, DLR_UNDELIVERED, DLR_SMSC_NACK):
        return None
    return Receipt(
        provider=receipt.provider,
        provider_message_id=receipt.message_id,
        delivered=receipt.delivered,
        error=_error_text(receipt),
    )


@dataclass
class _Waiting:
    receipt: Receipt
    done: asyncio.Future[None]


class ReceiptWriter:
    """Group commit: one `apply_receipts` per group of concurrent calls, no timer."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.pending: list[_Waiting] = []
        self.lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()

    async def apply(self, receipt: Receipt) -> None:
        waiting = _Waiting(receipt, asyncio.get_running_loop().create_future())
        self.pending.append(waiting)
        async with self.lock:
            if not waiting.done.done():
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                # Shielded: a caller that goes away mid-write must not leave the others of
                # its group waiting for an answer that never comes.
                write = asyncio.create_task(self._write(batch))
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
                await asyncio.shield(write)
        await waiting.done

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            async with self.sessions() as session:
                await apply_receipts(session, [w.receipt for w in batch])
        except Exception as exc:
            log.exception("could not store receipts", receipts=len(batch))
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(exc)
            return
        for w in batch:
            if not w.done.done():
                w.done.set_result(None)


def _writer(request: Request) -> ReceiptWriter:
    writer: ReceiptWriter | None = getattr(request.app.state, "receipt_writer", None)
    if writer is None:
        writer = request.app.state.receipt_writer = ReceiptWriter(request.app.state.session_factory)
    return writer


FORBIDDEN = {
    "model": ErrorResponse,
    "description": "No valid signature: not a receipt we asked for; nothing was changed",
    "content": {"application/json": {"example": {"detail": "receipt signature invalid"}}},
}
MALFORMED = {
    "model": ErrorResponse,
    "description": "No dlr type, or not a number; nothing was changed",
    "content": {"application/json": {"example": {"detail": "type must be Kannel's dlr type"}}},
}
UNKNOWN = {
    "model": ErrorResponse,
    "description": "No provider of kind kannel by that name in the providers file",
    "content": {"application/json": {"example": {"detail": "kannel provider gateway not found"}}},
}


ROUTE: dict[str, Any] = dict(
    response_model=ReceiptAnswer,
    responses={
        400: MALFORMED,
        403: FORBIDDEN,
        404: UNKNOWN,
        422: {"model": ErrorResponse, "description": "Invalid input; nothing was changed"},
        503: {"model": ErrorResponse, "description": "The database is unavailable; retry"},
    },
    openapi_extra={
        "x-required-role": "none",
        "parameters": [
            {
                "name": n,
                "in": "query",
                "required": r,
                "schema": {"type": "string"},
                "description": d,
            }
            for n, r, d in (
                ("id", True, "Our message id (the dlr-url the sender built)"),
                ("sig", True, "The dlr-url's signature"),
                ("type", True, "Kannel's dlr type (%d): 1, 2, 4, 8 or 16"),
                ("reply", False, "The SMSC's receipt text (%A)"),
            )
        ],
    },
)


@router.get("/kannel/{provider}", **ROUTE)
async def kannel_receipt(provider: str, request: Request, config: ProvidersDep) -> ReceiptAnswer:
    """The receipt of one message, called by Kannel at the dlr-url the sender gave it (no
    bearer token: the URL's signature under the provider's `callback_secret` proves it).
    Final types (1 delivered, 2 undelivered, 16 refused by the SMSC) are stored before the
    answer; intermediate ones (4, 8) change nothing."""
    return await _receipt(provider, request, config)


@router.post("/kannel/{provider}", **ROUTE)
async def post_kannel_receipt(
    provider: str, request: Request, config: ProvidersDep
) -> ReceiptAnswer:
    """As GET, for a gateway set to POST its dlr-url calls (the same query; or, without
    one, the same fields as a form)."""
    return await _receipt(provider, request, config)


async def _receipt(provider: str, request: Request, config: ProvidersConfig) -> ReceiptAnswer:
    kannel = config.providers.get(provider)
    if not isinstance(kannel, KannelProvider):
        KANNEL_CALLBACKS.labels("unknown", "unknown_provider").inc()
        raise ApiError(404, f"kannel provider {provider[:40]} not found")
    params = dict(request.query_params)
    if request.method == "POST" and not params:
        params = {k: str(v) for k, v in (await request.form()).items()}
    parsed = parse_callback(kannel, params)
    if parsed is None:
        signed = parse_callback(kannel, params | {"type": "1"}) is not None
        if signed:  # a genuine URL with a broken type
            KANNEL_CALLBACKS.labels(provider, "malformed").inc()
            raise ApiError(400, "type must be Kannel's dlr type (a whole number)")
        KANNEL_CALLBACKS.labels(provider, "forged").inc()
        log.warning("kannel receipt refused: bad signature", provider=provider)
        raise ApiError(403, "receipt signature invalid")
    receipt = to_receipt(parsed)
    if receipt is None:
        KANNEL_CALLBACKS.labels(provider, "intermediate").inc()
        return ReceiptAnswer(result="intermediate")
    try:
        await _writer(request).apply(receipt)
    except Exception as exc:
        raise ApiError(503, "could not store the receipt; try again") from exc
    KANNEL_CALLBACKS.labels(provider, "applied").inc()
    return ReceiptAnswer(result="applied")


# --- replies (MO) through Kannel's sms-service -------------------------------------------------

MO_SUBJECT = "mo"  # what the sms-service URL's signature signs, in place of a message id


def mo_signature(provider: KannelProvider) -> str:
    """The `sig` of the sms-service get-url: fixed per provider (Kannel fills in only the
    sender and the text), HMAC-SHA256 of `provider:mo` under the callback secret."""
    return callback_signature(
        provider.callback_secret.get_secret_value(), provider.name, MO_SUBJECT
    )


def mo_url(provider: KannelProvider) -> str:
    """The get-url for smsbox's `sms-service` (docs/PROVIDERS.md)."""
    base = provider.callback_base_url.rstrip("/")
    return (
        f"{base}/api/v1/receipts/kannel/{provider.name}/replies"
        f"?sig={mo_signature(provider)}&from=%p&text=%a"
    )


class ReplyAnswer(BaseModel):
    result: str = Field(
        description="stored: the reply was kept (a stop word opted its client out)",
        examples=["stored"],
    )


REPLY_ROUTE: dict[str, Any] = dict(
    response_model=ReplyAnswer,
    responses={
        400: {
            "model": ErrorResponse,
            "description": "No sender or text; nothing was changed",
            "content": {"application/json": {"example": {"detail": "from and text are required"}}},
        },
        403: FORBIDDEN,
        404: UNKNOWN,
        422: {"model": ErrorResponse, "description": "Invalid input; nothing was changed"},
        503: {"model": ErrorResponse, "description": "The database is unavailable; retry"},
    },
    openapi_extra={
        "x-required-role": "none",
        "parameters": [
            {
                "name": n,
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": d,
            }
            for n, d in (
                ("sig", "The sms-service URL's signature (`mo_url`)"),
                ("from", "The phone that sent it (Kannel's %p)"),
                ("text", "Its text (Kannel's %a)"),
            )
        ],
    },
)


@router.get("/kannel/{provider}/replies", **REPLY_ROUTE)
async def kannel_reply(provider: str, request: Request, config: ProvidersDep) -> ReplyAnswer:
    """An SMS a phone sent back, forwarded by Kannel's `sms-service` (its get-url carries a
    fixed signature under the provider's `callback_secret`; no bearer token). Stored with
    its client and mailing; an exact stop word (STOP_WORDS) opts the client out."""
    kannel = config.providers.get(provider)
    if not isinstance(kannel, KannelProvider):
        raise ApiError(404, f"kannel provider {provider[:40]} not found")
    params = request.query_params
    if not hmac.compare_digest(params.get("sig", ""), mo_signature(kannel)):
        KANNEL_CALLBACKS.labels(provider, "forged").inc()
        raise ApiError(403, "reply signature invalid")
    phone, text = params.get("from", "").strip(), params.get("text", "")
    if not phone or not text.strip() or len(text) > 2000 or len(phone) > 32:
        raise ApiError(400, "from and text are required (text up to 2000 characters)")
    settings = request.app.state.settings
    try:
        async with request.app.state.session_factory() as session:
            await record_replies(session, [Reply(provider, phone, text)], settings.stop_words)
    except Exception as exc:
        log.exception("could not store a reply", provider=provider)
        raise ApiError(503, "could not store the reply; try again") from exc
    KANNEL_CALLBACKS.labels(provider, "reply").inc()
    return ReplyAnswer(result="stored")
