"""Delivery statistics, read from the per-mailing status counters (never a scan of messages)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.mailings.schemas import MailingStats, MailingStatsDetail, StatsPage
from services.api.mailings.service import get_mailing
from services.api.pagination import next_after_id
from shared.domain.statuses import MailingStatus, MessageStatus
from shared.models import Mailing, MessageCount


def _all_statuses(counts: dict[str, int]) -> dict[MessageStatus, int]:
    return {status: counts.get(status, 0) for status in MessageStatus}


async def _counts_by_mailing(
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
    counts = await _counts_by_mailing(session, [m.id for m in mailings])
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
    mailing_counts = dict(by_status.tuples().all())
    return StatsPage(
        items=[MailingStats.model_validate(_stats_of(m, counts[m.id])) for m in mailings],
        next_after_id=next_after_id([m.id for m in mailings], limit),
        totals=_all_statuses({status: int(n) for status, n in totals.tuples()}),
        mailings_by_status={s: mailing_counts.get(s, 0) for s in MailingStatus},
    )


async def mailing_stats(session: AsyncSession, mailing_id: int) -> MailingStatsDetail:
    mailing = await get_mailing(session, mailing_id)
    counts = await _counts_by_mailing(session, [mailing_id])
    return MailingStatsDetail.model_validate(
        _stats_of(mailing, counts[mailing_id])
        | {
            "created_at": mailing.created_at,
            "started_at": mailing.started_at,
            "fanout_done_at": mailing.fanout_done_at,
            "completed_at": mailing.completed_at,
        }
    )
