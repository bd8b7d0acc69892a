"""Dashboard: live mailings with progress, today's totals, the send rate, provider health."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import aio_pika.exceptions
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.deps import SessionDep
from services.api.mailings import check
from services.api.mailings.stats import counts_by_mailing
from services.api.ui.deps import LiveUserDep, UserDep
from services.api.ui.templating import admin_timezone, render
from shared.domain.statuses import MESSAGE_TERMINAL_STATUSES, MailingStatus
from shared.messaging import Names
from shared.models import Mailing, MessageCount, MessageMinute, ProviderStatus

router = APIRouter(include_in_schema=False)

LIVE = (MailingStatus.RUNNING, MailingStatus.SCHEDULED, MailingStatus.PAUSED)
OUTCOMES = ("sent", "failed", "expired")


def progress_of(counts: dict[str, int]) -> dict[str, int]:
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status in MESSAGE_TERMINAL_STATUSES)
    return {"total": total, "done": done, "sent": counts.get("sent", 0)}


async def live_mailings(session: AsyncSession) -> list[dict[str, Any]]:
    mailings = list(
        await session.scalars(
            select(Mailing)
            .where(Mailing.deleted_at.is_(None), Mailing.status.in_(LIVE))
            .order_by(Mailing.start_at, Mailing.id)
            .limit(50)
        )
    )
    counts = await counts_by_mailing(session, [m.id for m in mailings])
    return [{"mailing": m, **progress_of(counts[m.id])} for m in mailings]


# Each costs a count over the directory: the first ten starting are shown.
AWAITING_SHOWN = 10


async def awaiting_approval(
    session: AsyncSession, threshold: int | None, *, frequency_cap: str | None = None
) -> list[dict[str, Any]]:
    """Mailings waiting for an admin's approval, oldest start first, each with its check."""
    mailings = list(
        await session.scalars(
            select(Mailing)
            .where(
                Mailing.deleted_at.is_(None),
                Mailing.status == MailingStatus.AWAITING_APPROVAL,
            )
            .order_by(Mailing.start_at, Mailing.id)
            .limit(AWAITING_SHOWN)
        )
    )
    return [
        {
            "mailing": m,
            "check": await check.presend_check(
                session, check.Draft.of(m), threshold=threshold, frequency_cap=frequency_cap
            ),
        }
        for m in mailings
    ]


async def totals_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    rows = await session.execute(
        select(MessageMinute.status, func.sum(MessageMinute.count))
        .where(MessageMinute.minute >= since)
        .group_by(MessageMinute.status)
    )
    found = {status: int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in (*OUTCOMES, "retrying")}


async def send_rate(session: AsyncSession, now: datetime) -> dict[str, list[float]]:
    """Messages sent and failed per minute over the last hour (uPlot's columns)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    rows = await session.execute(
        select(MessageMinute.minute, MessageMinute.status, func.sum(MessageMinute.count))
        .where(MessageMinute.minute >= start, MessageMinute.status.in_(("sent", "failed")))
        .group_by(MessageMinute.minute, MessageMinute.status)
    )
    per_minute: dict[tuple[datetime, str], int] = {(m, s): int(n) for m, s, n in rows}
    minutes = [start + timedelta(minutes=i) for i in range(60)]
    return {
        "t": [m.timestamp() for m in minutes],
        "sent": [per_minute.get((m, "sent"), 0) / 60 for m in minutes],
        "failed": [per_minute.get((m, "failed"), 0) / 60 for m in minutes],
    }


PARKED_MAX_AGE_S = 15.0
# A sender reports every 10 s; one silent for longer is taken as gone.
SENDER_FRESH = timedelta(seconds=30)


async def parked_jobs(request: Request) -> int | None:
    """Poison jobs kept in the parked queue (asked at most every PARKED_MAX_AGE_S, so the
    dashboard's polling adds no broker load); 0 when the queue does not exist yet (a sender
    declares it; until one runs, nothing can have been parked); None only when the broker
    cannot be asked now."""
    state = request.app.state
    now = time.monotonic()
    cached = getattr(state, "ui_parked", None)
    if cached is not None and now - cached[0] < PARKED_MAX_AGE_S:
        return cached[1]
    settings = state.settings
    count: int | None
    try:
        async with asyncio.timeout(1.5):
            connection = await aio_pika.connect(settings.amqp_url)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(
                    Names(settings.amqp_namespace).parked, passive=True
                )
                count = queue.declaration_result.message_count
    except aio_pika.exceptions.ChannelNotFoundEntity:
        count = 0  # never declared: no sender has run in this namespace, nothing was parked
    except Exception:
        count = None
    state.ui_parked = (now, count)
    return count


async def health(session: AsyncSession, request: Request, now: datetime) -> dict[str, Any]:
    backlog = await session.scalar(
        select(func.coalesce(func.sum(MessageCount.count), 0))
        .join(Mailing, Mailing.id == MessageCount.mailing_id)
        .where(MessageCount.status == "retrying", Mailing.deleted_at.is_(None))
    )
    recent = await totals_since(session, now - timedelta(minutes=5))
    attempts = recent["sent"] + recent["failed"] + recent["retrying"]
    failing = (recent["failed"] + recent["retrying"]) / attempts if attempts else 0.0
    senders = list(
        await session.scalars(
            select(ProviderStatus).where(ProviderStatus.reported_at >= now - SENDER_FRESH)
        )
    )
    states = {sender.breaker_state for sender in senders}
    breaker = next((s for s in ("open", "half_open", "closed") if s in states), None)
    return {
        "breaker": breaker,
        "breaker_reason": next((s.reason for s in senders if s.breaker_state == breaker), ""),
        "senders": len(senders),
        "retry_backlog": int(backlog or 0),
        "parked": await parked_jobs(request),
        "attempts_5m": attempts,
        "failing_share": failing,
        "state": "failing" if attempts and failing >= 0.5 else ("ok" if attempts else "idle"),
    }


async def _context(request: Request, session: AsyncSession) -> dict[str, Any]:
    now = datetime.now(UTC)
    zone = ZoneInfo(admin_timezone(request))
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "section": "dashboard",
        "live": await live_mailings(session),
        "today": await totals_since(session, midnight),
        "health": await health(session, request, now),
    }


@router.get("/ui/", name="ui_dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, user: UserDep, session: SessionDep) -> HTMLResponse:
    # Counted once when the page loads, not on each refresh of its live part.
    threshold = request.app.state.settings.approval_threshold
    awaiting = await awaiting_approval(
        session, threshold, frequency_cap=request.app.state.settings.frequency_cap
    )
    return render(
        request,
        "dashboard.html",
        {"user": user, "awaiting": awaiting, **await _context(request, session)},
    )


@router.get("/ui/dashboard/live", name="ui_dashboard_live", response_class=HTMLResponse)
async def dashboard_live(request: Request, user: LiveUserDep, session: SessionDep) -> HTMLResponse:
    """The live part of the dashboard, refreshed by htmx."""
    return render(
        request, "partials/dashboard_live.html", {"user": user, **await _context(request, session)}
    )


@router.get("/ui/dashboard/rate.json", name="ui_dashboard_rate")
async def dashboard_rate(user: LiveUserDep, session: SessionDep) -> JSONResponse:
    return JSONResponse(await send_rate(session, datetime.now(UTC)))
