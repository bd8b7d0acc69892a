"""Starting due mailings: safe with several scheduler replicas (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.lifecycle import sql
from shared.domain.statuses import MailingStatus

CLAIM_DUE_MAILINGS = text(f"""
    WITH started AS (
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
    )
    -- The request that created or last changed each one (its audit entry, written in that
    -- request's transaction): the activation links to it whether or not its event came first.
    SELECT s.id, changed.request_id, changed.traceparent
    FROM started AS s
    LEFT JOIN LATERAL (
        SELECT a.request_id, a.traceparent FROM audit_log AS a
        WHERE a.target_type = 'mailing' AND a.target_id = s.id::text
          AND a.action <> 'test_send'
        ORDER BY a.id DESC
        LIMIT 1
    ) AS changed ON true
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


@dataclass(frozen=True, slots=True)
class Started:
    """A mailing this scheduler just started, and the request that last changed it."""

    mailing_id: int
    request_id: str | None
    traceparent: str | None


async def claim_due_mailings(session: AsyncSession) -> list[Started]:
    started = [Started(*row) for row in (await session.execute(CLAIM_DUE_MAILINGS)).all()]
    await session.commit()
    return started


async def ensure_partitions(session: AsyncSession, mailing_ids: list[int]) -> None:
    await session.execute(ENSURE_PARTITIONS, {"ids": mailing_ids})
    await session.commit()


async def next_start_at(session: AsyncSession) -> datetime | None:
    return await session.scalar(NEXT_START)
