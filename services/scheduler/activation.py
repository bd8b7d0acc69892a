"""Starting due mailings: safe with several scheduler replicas (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.lifecycle import sql
from shared.domain.statuses import MailingStatus

CLAIM_DUE_MAILINGS = text(f"""
    UPDATE mailing
    SET status = {sql(MailingStatus.RUNNING)}, started_at = now(), updated_at = now(),
        fanout_cursor = 0,
        -- Not fanned out yet: first in line for the fan-out, and its first chunk is small.
        fanout_advanced_at = NULL,
        -- The recipient snapshot: clients added after the start are not part of this mailing.
        fanout_max_client_id = (SELECT coalesce(max(id), 0) FROM client)
    WHERE id IN (
        SELECT id FROM mailing
        WHERE status = {sql(MailingStatus.SCHEDULED)} AND start_at <= now() AND deleted_at IS NULL
        ORDER BY start_at
        LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
""")

NEXT_START = text(f"""
    SELECT min(start_at) FROM mailing
    WHERE status = {sql(MailingStatus.SCHEDULED)} AND deleted_at IS NULL
""")


# Each started mailing's partition of `message` (migration 0007), before its fan-out: usually
# its insert made it already; the fan-out's first chunk makes sure again.
ENSURE_PARTITIONS = text(
    "SELECT count(message_partition_ensure(id)) FROM unnest(CAST(:ids AS bigint[])) AS t(id)"
)


async def claim_due_mailings(session: AsyncSession) -> list[int]:
    ids = list((await session.execute(CLAIM_DUE_MAILINGS)).scalars())
    await session.commit()
    return ids


async def ensure_partitions(session: AsyncSession, mailing_ids: list[int]) -> None:
    await session.execute(ENSURE_PARTITIONS, {"ids": mailing_ids})
    await session.commit()


async def next_start_at(session: AsyncSession) -> datetime | None:
    return await session.scalar(NEXT_START)
