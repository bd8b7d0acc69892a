"""Keeping the send queue topped up: lease due messages, then publish one job per message.

The database holds the backlog and the broker a bounded window of live leases, so pause,
cancel and end time cost little and no mailing starves behind a bigger one (round-robin).
A lease that lapsed (a job lost in a crash, a broker restart, a killed sender) makes its
message due again: the reaper is this same query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.end_time import not_ended_sql, seconds_to_end_sql
from shared.domain.lifecycle import LEASED, REAPABLE, S, sql, sql_in
from shared.domain.statuses import MailingStatus

COUNT_LIVE_LEASES = text(f"""
    SELECT count(*) FROM message
    WHERE status IN ({sql_in(LEASED)}) AND lease_until > now()
""")

# Mailings whose messages may be leased: running, not deleted, before their end.
RUNNING_MAILINGS = f"""
    SELECT id FROM mailing
    WHERE status = {sql(MailingStatus.RUNNING)} AND deleted_at IS NULL
      AND {not_ended_sql("end_at")}
"""

# `message` is partitioned by mailing id (migration 0007): the running mailings' ids, read just
# before, are constants here, so only their partitions are planned and scanned (the reaper's
# lease_until and the final UPDATE by id would otherwise visit every partition).
_OF_RUNNING = "mailing_id = ANY(CAST(:mailing_ids AS bigint[]))"

LEASE = text(f"""
    WITH running AS ({RUNNING_MAILINGS}),
    due AS (
        SELECT picked.id FROM running
        CROSS JOIN LATERAL (
            SELECT id FROM message
            WHERE mailing_id = running.id AND status = {sql(S.PENDING)}
              AND not_before <= now() AND {_OF_RUNNING}
            ORDER BY not_before
            LIMIT :per_mailing
            FOR UPDATE SKIP LOCKED
        ) AS picked
    ),
    lapsed AS (
        SELECT id FROM message
        WHERE status IN ({sql_in(REAPABLE)}) AND lease_until <= now()
          AND mailing_id IN (SELECT id FROM running) AND {_OF_RUNNING}
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    chosen AS (
        (SELECT id, false AS reaped FROM due LIMIT :limit)
        UNION ALL
        SELECT id, true FROM lapsed
    ),
    token AS (SELECT nextval('message_token_seq') AS value)
    UPDATE message m
    SET status = {sql(S.QUEUED)}, token = token.value,
        lease_until = now() + make_interval(secs => :ttl), queued_at = now(), updated_at = now()
    FROM chosen, token, mailing mg
    WHERE m.id = chosen.id AND m.{_OF_RUNNING} AND mg.id = m.mailing_id
    RETURNING m.id, m.token, m.mailing_id, mg.end_at, chosen.reaped,
              {seconds_to_end_sql("mg.end_at")} AS seconds_left
""")

RUNNING_IDS = text(f"SELECT id FROM ({RUNNING_MAILINGS}) AS running ORDER BY id")


@dataclass(frozen=True, slots=True)
class Lease:
    message_id: int
    token: int
    mailing_id: int
    end_at: datetime
    reaped: bool
    seconds_left: float


async def live_leases(session: AsyncSession) -> int:
    return int(await session.scalar(COUNT_LIVE_LEASES) or 0)


async def lease_due_messages(session: AsyncSession, *, limit: int, ttl_s: float) -> list[Lease]:
    """Lease up to `limit` messages in one transaction, spread over the running mailings."""
    running = list((await session.execute(RUNNING_IDS)).scalars())
    if not running or limit <= 0:
        await session.rollback()
        return []
    per_mailing = max(1, -(-limit // len(running)))
    rows = await session.execute(
        LEASE,
        {"per_mailing": per_mailing, "limit": limit, "ttl": ttl_s, "mailing_ids": running},
    )
    leases = [
        Lease(r.id, r.token, r.mailing_id, r.end_at, r.reaped, float(r.seconds_left)) for r in rows
    ]
    await session.commit()
    return leases
