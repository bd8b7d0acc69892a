"""Keeping the send queue topped up: lease due messages, then publish one job per message.

The database holds the backlog and the broker a bounded window of live leases, so pause,
cancel and end time cost little and no mailing starves behind a bigger one (round-robin).
A lease that lapsed (a job lost in a crash, a broker restart, a killed sender) makes its
message due again: the reaper is this same query.

Test sends have a lease of their own (`LEASE_TESTS`): whatever their mailing's status (a test
of a scheduled or paused mailing goes now), outside the lease cap (the api limits how many are
made), and until their own deadline (`shared.domain.test_send`), which is also their jobs' end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.end_time import not_ended_sql, seconds_to_end_sql
from shared.domain.lifecycle import LEASED, OPEN, REAPABLE, S, mailing_stopped_sql, sql, sql_in
from shared.domain.statuses import MailingStatus
from shared.domain.test_send import deadline_sql

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
              AND not_before <= now() AND NOT is_test AND {_OF_RUNNING}
            ORDER BY not_before
            LIMIT :per_mailing
            FOR UPDATE SKIP LOCKED
        ) AS picked
    ),
    lapsed AS (
        SELECT id FROM message
        WHERE status IN ({sql_in(REAPABLE)}) AND lease_until <= now()
          AND mailing_id IN (SELECT id FROM running) AND NOT is_test AND {_OF_RUNNING}
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
      -- By key, whatever the planner believes of the partition's rows (stale statistics).
      AND m.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING m.id, m.token, m.mailing_id, mg.end_at, chosen.reaped,
              {seconds_to_end_sql("mg.end_at")} AS seconds_left
""")

_TEST_DEADLINE = deadline_sql("m.created_at")

# Test sends due or with a lapsed lease, of any mailing not cancelled, before their deadline.
# `client_id IS NULL` (only a test has none) finds them through ix_message_client_id_open, a
# probe of the few open tests, never a scan of a mailing's messages.
LEASE_TESTS = text(f"""
    WITH chosen AS (
        SELECT m.id, m.mailing_id, m.status <> {sql(S.PENDING)} AS reaped FROM message m
        JOIN mailing mg ON mg.id = m.mailing_id
        WHERE m.client_id IS NULL AND m.is_test AND m.status IN ({sql_in(OPEN)})
          AND ((m.status = {sql(S.PENDING)} AND m.not_before <= now())
               OR (m.status IN ({sql_in(REAPABLE)}) AND m.lease_until <= now()))
          AND {not_ended_sql(_TEST_DEADLINE)}
          AND NOT {mailing_stopped_sql("mg")}
        ORDER BY m.id
        LIMIT :limit
        FOR UPDATE OF m SKIP LOCKED
    ),
    token AS (SELECT nextval('message_token_seq') AS value)
    UPDATE message m
    SET status = {sql(S.QUEUED)}, token = token.value,
        lease_until = now() + make_interval(secs => :ttl), queued_at = now(), updated_at = now()
    FROM chosen, token
    WHERE m.id = chosen.id AND m.mailing_id = chosen.mailing_id
    RETURNING m.id, m.token, m.mailing_id, {_TEST_DEADLINE} AS end_at, chosen.reaped,
              {seconds_to_end_sql(_TEST_DEADLINE)} AS seconds_left
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


async def lease_counts(session: AsyncSession) -> tuple[int, int]:
    """(live leases, outstanding leases: live or lapsed but not yet re-published)."""
    row = (await session.execute(COUNT_LEASES)).one()
    return int(row.live or 0), int(row.outstanding or 0)


async def live_leases(session: AsyncSession) -> int:
    return (await lease_counts(session))[0]


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


async def lease_test_sends(session: AsyncSession, *, limit: int, ttl_s: float) -> list[Lease]:
    """Lease the test sends that are due (or whose lease lapsed), in one transaction."""
    rows = await session.execute(LEASE_TESTS, {"limit": limit, "ttl": ttl_s})
    leases = [
        Lease(r.id, r.token, r.mailing_id, r.end_at, r.reaped, float(r.seconds_left)) for r in rows
    ]
    await session.commit()
    return leases


# Leases whose job could not be published (the broker away): due again now, instead of
# holding the lease cap until they lapse. Matched by (id, token), so a lease taken since is kept.
RETURN_UNPUBLISHED = text(f"""
    UPDATE message m SET status = {sql(S.PENDING)}, token = NULL, lease_until = NULL,
        updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:mailing_ids AS bigint[]))
        AS u(id, token, mailing_id)
    WHERE m.id = u.id AND m.mailing_id = u.mailing_id AND m.token = u.token
      AND m.status = {sql(S.QUEUED)}
""")


async def return_unpublished(session: AsyncSession, leases: list[Lease]) -> int:
    result = await session.execute(
        RETURN_UNPUBLISHED,
        {
            "ids": [lease.message_id for lease in leases],
            "tokens": [lease.token for lease in leases],
            "mailing_ids": [lease.mailing_id for lease in leases],
        },
    )
    await session.commit()
    return result.rowcount  # type: ignore[attr-defined]
