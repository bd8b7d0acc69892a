"""Closing what can no longer be delivered, and completing mailings.

- A cancelled (deleted) mailing: its undelivered messages become `cancelled`, except those a
  sender is sending right now (it records what really happened).
- A mailing past its end time: its undelivered messages become `expired`, except those a
  sender holds right now (it will finish them within its lease, never past the end).
- A started mailing whose fan-out is done and whose messages are all terminal: `completed`.
- A test send past its own deadline (`shared.domain.test_send`), not the mailing's end:
  `expired`, except while a sender holds it. Tests never hold up a mailing's completion (the
  counters it reads do not count them).

Each update is chunked so a million-message mailing never makes one giant transaction.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.end_time import END_REACHED, ended_sql
from shared.domain.lifecycle import (
    OPEN,
    S,
    mailing_stopped_sql,
    open_not_held_sql,
    sql,
    sql_in,
)
from shared.domain.statuses import MailingStatus
from shared.domain.test_send import deadline_sql

_LIVE = sql_in([MailingStatus.RUNNING, MailingStatus.PAUSED])

# `message` is partitioned by mailing id: the mailings to sweep are read first and passed as
# constants, so only their partitions are planned and scanned; the statement still checks each
# mailing's state itself (an end time extended meanwhile keeps its messages). The chosen ids
# come as one array (an InitPlan, run once), so the UPDATE finds them by key whatever the
# planner believes of a partition's rows: joined, stale statistics made it rescan the locking
# subquery once per row of the mailing (a 100-row chunk then took over 5 s).
_OF_MAILINGS = "mailing_id = ANY(CAST(:mailing_ids AS bigint[]))"
_HAS_OPEN = f"""EXISTS (
    SELECT 1 FROM message_count c
    WHERE c.mailing_id = mg.id AND c.status IN ({sql_in(OPEN)}) AND c.count > 0)"""

CANCELLED_MAILINGS = text(f"""
    SELECT mg.id FROM mailing mg WHERE {mailing_stopped_sql("mg")} AND {_HAS_OPEN}
""")

ENDED_MAILINGS = text(f"""
    SELECT mg.id FROM mailing mg
    WHERE mg.status IN ({_LIVE}) AND {ended_sql("mg.end_at")} AND {_HAS_OPEN}
""")


def _end_chunk(status: S, where: str, *, of_mailings: bool = True, last_error: str = "") -> str:
    """Up to :limit open messages no sender holds that `where` picks become `status`;
    `last_error` is kept if set, else becomes this one. `where` reads the message `msg` and,
    `of_mailings` (the swept mailings' ids as constants), its mailing `mg`."""
    error = f", last_error = coalesce(m.last_error, '{last_error}')" if last_error else ""
    mailings = f" AND msg.{_OF_MAILINGS}" if of_mailings else ""
    join = "JOIN mailing mg ON mg.id = msg.mailing_id" if of_mailings else ""
    pick = f"""
            SELECT msg.id, msg.mailing_id FROM message msg {join}
            WHERE {where} AND {open_not_held_sql("msg")}{mailings}
            LIMIT :limit
            FOR UPDATE OF msg SKIP LOCKED"""
    update = f"""
        UPDATE message m SET status = {sql(status)}, token = NULL, lease_until = NULL,
            updated_at = now(){error}"""
    if not of_mailings:  # test sends: a handful, found by their own index
        return f"""{update}
        FROM ({pick}
        ) AS due
        WHERE m.id = due.id AND m.mailing_id = due.mailing_id
    """
    # The chosen ids as one array (an InitPlan, run once): the UPDATE finds them by key
    # whatever the planner believes of the partition (a join to the locking subquery was
    # planned as a nested loop rescanning it once per row of the mailing: the soak's stall).
    return f"""{update}
        WHERE m.id = ANY(ARRAY(SELECT id FROM ({pick}
        ) AS due)){mailings.replace("msg.", "m.")}
    """


CANCEL_CHUNK = text(_end_chunk(S.CANCELLED, mailing_stopped_sql("mg")))

EXPIRE_CHUNK = text(
    _end_chunk(
        S.EXPIRED,
        f"mg.status IN ({_LIVE}) AND {ended_sql('mg.end_at')} AND NOT msg.is_test",
        last_error=END_REACHED,
    )
)

# `client_id IS NULL`: only tests have none, found through ix_message_client_id_open.
EXPIRE_TESTS = text(
    _end_chunk(
        S.EXPIRED,
        f"msg.client_id IS NULL AND msg.is_test AND {ended_sql(deadline_sql('msg.created_at'))}",
        of_mailings=False,
        last_error=END_REACHED,
    )
)

COMPLETE = text(f"""
    UPDATE mailing mg SET status = {sql(MailingStatus.COMPLETED)}, completed_at = now(),
        updated_at = now()
    WHERE mg.fanout_done_at IS NOT NULL
      -- A paused mailing completes only once its end time has passed.
      AND (mg.status = {sql(MailingStatus.RUNNING)}
           OR (mg.status = {sql(MailingStatus.PAUSED)} AND {ended_sql("mg.end_at")}))
      AND NOT EXISTS (
          SELECT 1 FROM message_count c
          WHERE c.mailing_id = mg.id AND c.status IN ({sql_in(OPEN)}) AND c.count > 0
      )
    RETURNING mg.id
""")

BACKLOG = text(f"""
    SELECT coalesce(sum(c.count), 0) FROM message_count c
    JOIN mailing mg ON mg.id = c.mailing_id
    WHERE c.status = {sql(S.PENDING)} AND mg.status = {sql(MailingStatus.RUNNING)}
      AND mg.deleted_at IS NULL
""")


async def _chunk(session: AsyncSession, mailings: TextClause, chunk: TextClause, limit: int) -> int:
    ids = list((await session.execute(mailings)).scalars())
    if not ids:
        await session.commit()
        return 0
    result = await session.execute(chunk, {"mailing_ids": ids, "limit": limit})
    await session.commit()
    return result.rowcount  # type: ignore[attr-defined]


async def cancel_chunk(session: AsyncSession, limit: int) -> int:
    return await _chunk(session, CANCELLED_MAILINGS, CANCEL_CHUNK, limit)


async def expire_chunk(session: AsyncSession, limit: int) -> int:
    return await _chunk(session, ENDED_MAILINGS, EXPIRE_CHUNK, limit)


async def expire_test_sends(session: AsyncSession, limit: int) -> int:
    result = await session.execute(EXPIRE_TESTS, {"limit": limit})
    await session.commit()
    return result.rowcount  # type: ignore[attr-defined]


async def complete_mailings(session: AsyncSession) -> list[int]:
    ids = list((await session.execute(COMPLETE)).scalars())
    await session.commit()
    return ids


async def backlog(session: AsyncSession) -> int:
    return int(await session.scalar(BACKLOG) or 0)
