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

# Live leases (what the cap bounds) and outstanding ones (live, and lapsed but not yet
# re-published: what the drain rate is measured on).
COUNT_LEASES = text(f"""
    SELECT count(*) FILTER (WHERE lease_until > now()) AS live, count(*) AS outstanding
    FROM message
    WHERE status IN ({sql_in(LEASED)})
""")

# Mailings whose messages may be leased: running, not deleted, before their end.
RUNNING_MAILINGS = f"""
    SELECT id FROM mailing
    WHERE status = {sql(MailingStatus.RUNNING)} AND deleted_at IS NULL
      AND {not_ended_sql("end_at")}
"""

LEASE = text(f"""
    WITH running AS ({RUNNING_MAILINGS}),
    due AS (
        SELECT picked.id FROM running
        CROSS JOIN LATERAL (
            SELECT id FROM message
            WHERE mailing_id = running.id AND status = {sql(S.PENDING)}
              AND not_before <= now()
            ORDER BY not_before
            LIMIT :per_mailing
            FOR UPDATE SKIP LOCKED
        ) AS picked
    ),
    lapsed AS (
        SELECT id FROM message
        WHERE status IN ({sql_in(REAPABLE)}) AND lease_until <= now()
          AND mailing_id IN (SELECT id FROM running)
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
    WHERE m.id = chosen.id AND mg.id = m.mailing_id
    RETURNING m.id, m.token, m.mailing_id, mg.end_at, chosen.reaped,
              {seconds_to_end_sql("mg.end_at")} AS seconds_left
""")

RUNNING_COUNT = text(f"SELECT count(*) FROM ({RUNNING_MAILINGS}) AS running")


@dataclass(frozen=True, slots=True)
class Lease:
    message_id: int
    token: int
    mailing_id: int
    end_at: datetime
    reaped: bool
    seconds_left: float


async def lease_counts(session: AsyncSession) -> tuple[int, int]:
    """(live leases, outstanding leases: live or lapsed but not yet re-published)."""
    row = (await session.execute(COUNT_LEASES)).one()
    return int(row.live or 0), int(row.outstanding or 0)


async def live_leases(session: AsyncSession) -> int:
    return (await lease_counts(session))[0]


async def lease_due_messages(session: AsyncSession, *, limit: int, ttl_s: float) -> list[Lease]:
    """Lease up to `limit` messages in one transaction, spread over the running mailings."""
    running = int(await session.scalar(RUNNING_COUNT) or 0)
    if running == 0 or limit <= 0:
        await session.rollback()
        return []
    per_mailing = max(1, -(-limit // running))
    rows = await session.execute(LEASE, {"per_mailing": per_mailing, "limit": limit, "ttl": ttl_s})
    leases = [
        Lease(r.id, r.token, r.mailing_id, r.end_at, r.reaped, float(r.seconds_left)) for r in rows
    ]
    await session.commit()
    return leases
