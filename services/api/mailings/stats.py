"""Delivery statistics, read from the per-mailing status counters (never a scan of messages)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.mailings import delivery
from services.api.mailings.schemas import MailingStats, MailingStatsDetail, StatsPage, WaitOut
from services.api.mailings.service import get_mailing
from services.api.pagination import next_after_id
from shared.domain.send_window import SendWindow
from shared.domain.statuses import MESSAGE_OPEN_STATUSES, MailingStatus, MessageStatus
from shared.domain.waiting import Wait, WaitReason, describe, message_wait
from shared.models import Client, Mailing, Message, MessageCount


def _all_statuses(counts: dict[str, int]) -> dict[MessageStatus, int]:
    return {status: counts.get(status, 0) for status in MessageStatus}


async def counts_by_mailing(
    session: AsyncSession, mailing_ids: list[int]
) -> dict[int, dict[str, int]]:
    rows = await session.execute(
        select(MessageCount.mailing_id, MessageCount.status, MessageCount.count).where(
            MessageCount.mailing_id.in_(mailing_ids)
        )
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for mailing_id, status, count in rows:
        counts[mailing_id][status] = count
    return counts


def _stats_of(mailing: Mailing, counts: dict[str, int]) -> dict[str, object]:
    by_status = _all_statuses(counts)
    return {
        "mailing_id": mailing.id,
        "status": mailing.status,
        "start_at": mailing.start_at,
        "end_at": mailing.end_at,
        "total": sum(by_status.values()),
        "counts": by_status,
    }


async def stats_page(session: AsyncSession, *, limit: int, after_id: int) -> StatsPage:
    mailings = list(
        await session.scalars(
            select(Mailing)
            .where(Mailing.deleted_at.is_(None), Mailing.id > after_id)
            .order_by(Mailing.id)
            .limit(limit)
        )
    )
    counts = await counts_by_mailing(session, [m.id for m in mailings])
    totals = await session.execute(
        select(MessageCount.status, func.sum(MessageCount.count))
        .join(Mailing, Mailing.id == MessageCount.mailing_id)
        .where(Mailing.deleted_at.is_(None))
        .group_by(MessageCount.status)
    )
    by_status = await session.execute(
        select(Mailing.status, func.count())
        .where(Mailing.deleted_at.is_(None))
        .group_by(Mailing.status)
    )
    mailing_counts = {status: int(n) for status, n in by_status.all()}
    return StatsPage(
        items=[MailingStats.model_validate(_stats_of(m, counts[m.id])) for m in mailings],
        next_after_id=next_after_id([m.id for m in mailings], limit),
        totals=_all_statuses({status: int(n) for status, n in totals.all()}),
        mailings_by_status={s: mailing_counts.get(s, 0) for s in MailingStatus},
    )


async def mailing_stats(
    session: AsyncSession,
    mailing_id: int,
    now: datetime | None = None,
    *,
    delivery_groups: bool = True,
) -> MailingStatsDetail:
    """`delivery_groups=False` leaves `delivery.by_route` empty (a query over the mailing's
    sent messages): the console's live part, refreshed every second, shows the totals only."""
    mailing = await get_mailing(session, mailing_id)
    counts = await counts_by_mailing(session, [mailing_id])
    waiting = await waiting_reasons(session, mailing, counts[mailing_id], now or datetime.now(UTC))
    return MailingStatsDetail.model_validate(
        _stats_of(mailing, counts[mailing_id])
        | {
            "created_at": mailing.created_at,
            "started_at": mailing.started_at,
            "fanout_done_at": mailing.fanout_done_at,
            "completed_at": mailing.completed_at,
            "waiting": waiting,
            "delivery": await delivery.delivery(
                session, mailing_id, counts[mailing_id], groups=delivery_groups
            ),
        }
    )


def send_window_of(mailing: Mailing) -> SendWindow | None:
    if mailing.send_window_start is None or mailing.send_window_end is None:
        return None
    return SendWindow(mailing.send_window_start, mailing.send_window_end)


def _wait_out(wait: Wait, messages: int) -> WaitOut:
    return WaitOut(
        reason=wait.reason,
        messages=messages,
        until=wait.until,
        timezone=wait.timezone,
        detail=describe(wait),
    )


async def waiting_reasons(
    session: AsyncSession, mailing: Mailing, counts: dict[str, int], now: datetime
) -> list[WaitOut]:
    """Why the mailing's undelivered messages wait: from the counters and, for pending and
    retrying messages, the earliest one of each (an index probe, never a scan)."""
    status = MailingStatus(mailing.status)
    open_messages = sum(counts.get(s, 0) for s in MESSAGE_OPEN_STATUSES)
    if status is MailingStatus.SCHEDULED and mailing.start_at > now:
        return [_wait_out(Wait(WaitReason.SCHEDULED, mailing.start_at), open_messages)]
    if status is MailingStatus.PAUSED:
        return [_wait_out(Wait(WaitReason.PAUSED), open_messages)] if open_messages else []
    if status not in (MailingStatus.RUNNING, MailingStatus.SCHEDULED):
        return []
    waits: list[WaitOut] = []
    window = send_window_of(mailing)
    for message_status in (MessageStatus.PENDING, MessageStatus.RETRYING):
        how_many = counts.get(message_status, 0)
        if not how_many:
            continue
        earliest = (
            await session.execute(
                select(Message.not_before, Message.attempts, Client.timezone)
                .join(Client, Client.id == Message.client_id)
                .where(Message.mailing_id == mailing.id, Message.status == message_status)
                .order_by(Message.not_before)
                .limit(1)
            )
        ).first()
        if earliest is None:
            continue
        wait = message_wait(
            status=message_status,
            not_before=earliest.not_before,
            attempts=earliest.attempts,
            mailing_status=status,
            start_at=mailing.start_at,
            window=window,
            client_timezone=earliest.timezone,
            now=now,
        )
        if wait is not None:
            waits.append(_wait_out(wait, how_many))
    in_flight = counts.get(MessageStatus.QUEUED, 0) + counts.get(MessageStatus.SENDING, 0)
    if in_flight:
        waits.append(_wait_out(Wait(WaitReason.SENDING), in_flight))
    return waits
