"""The sender's database statements: one claim and one result write per micro-batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.messaging import Job
from shared.models import OPEN_STATUSES_SQL
from shared.sql import OPTED_OUT_REASON, client_opted_out, next_window_open, window_open

_WINDOW_OPEN = window_open("c.timezone", "mg.send_window_start", "mg.send_window_end")
_NEXT_OPEN = next_window_open("c.timezone", "mg.send_window_start", "mg.send_window_end")

# Decides, in the database's clock, what each job's message becomes: `sending` when it may go
# out now; `cancelled`, `expired`, or back to `pending` (paused mailing, closed send window)
# otherwise. Jobs with a stale token or a message in another status match nothing.
CLAIM = text(f"""
    WITH job AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    ),
    target AS (
        SELECT m.id, job.token AS job_token,
            CASE
                WHEN mg.deleted_at IS NOT NULL OR mg.status = 'cancelled'
                     OR c.deleted_at IS NOT NULL OR {client_opted_out("c")} THEN 'cancelled'
                WHEN now() >= mg.end_at - make_interval(secs => :margin) THEN 'expired'
                WHEN mg.status <> 'running' THEN 'pending'
                WHEN NOT {_WINDOW_OPEN} THEN 'pending'
                ELSE 'sending'
            END AS next_status,
            {_NEXT_OPEN} AS next_open, {client_opted_out("c")} AS opted_out
        FROM message m
        JOIN job ON job.id = m.id AND job.token = m.token
        JOIN mailing mg ON mg.id = m.mailing_id
        JOIN client c ON c.id = m.client_id
        WHERE m.status IN ('queued', 'retrying')
        ORDER BY m.id
        FOR UPDATE OF m
    )
    UPDATE message m SET
        status = t.next_status,
        token = CASE WHEN t.next_status = 'sending' THEN m.token END,
        lease_until = CASE WHEN t.next_status = 'sending'
                           THEN now() + make_interval(secs => :lease) END,
        not_before = CASE WHEN t.next_status = 'pending' THEN t.next_open ELSE m.not_before END,
        last_error = CASE WHEN t.next_status = 'expired' THEN 'end time reached'
                          WHEN t.next_status = 'cancelled' AND t.opted_out
                          THEN '{OPTED_OUT_REASON}'
                          ELSE m.last_error END,
        updated_at = now()
    FROM target t, mailing mg, client c
    WHERE m.id = t.id AND mg.id = m.mailing_id AND c.id = m.client_id
    RETURNING m.id, t.job_token AS token, m.status, m.mailing_id, m.client_id, m.attempts,
              c.phone, mg.text,
              extract(epoch FROM mg.end_at - now()) AS seconds_to_end
""")

# `sent` is a fact and lands on any message not yet terminal; every other outcome lands only
# while this sender still holds the message (same token, still `sending`).
WRITE_RESULTS = text(f"""
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:statuses AS text[]),
            CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:attempted AS int[])
        ) AS r(id, token, status, error, delay_s, attempted)
        ORDER BY id
    )
    UPDATE message m SET
        status = r.status,
        token = CASE WHEN r.status = 'retrying' THEN m.token END,
        lease_until = CASE WHEN r.status = 'retrying'
                           THEN now() + make_interval(secs => r.delay_s + :lease) END,
        not_before = CASE WHEN r.status IN ('retrying', 'pending')
                          THEN now() + make_interval(secs => r.delay_s) ELSE m.not_before END,
        attempts = m.attempts + r.attempted,
        last_error = coalesce(r.error, m.last_error),
        sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE m.sent_at END,
        updated_at = now()
    FROM r
    WHERE m.id = r.id
      AND ((r.status = 'sent' AND m.status IN ({OPEN_STATUSES_SQL}))
           OR (m.token = r.token AND m.status = 'sending'))
    RETURNING m.id, m.status
""")

# Give leased jobs back without sending (breaker open): no attempt is spent.
RELEASE = text("""
    UPDATE message m SET status = 'pending', token = NULL, lease_until = NULL,
        not_before = greatest(m.not_before, now() + make_interval(secs => :delay)),
        updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ('queued', 'retrying')
""")

# A job that sat in the send queue past its expiration: each of its messages is expired if the
# end time (as it is now) has come, else back to pending for the scheduler to queue again.
DEAD_LETTER_EXPIRED = text("""
    UPDATE message m SET
        status = CASE WHEN now() >= mg.end_at - make_interval(secs => :margin)
                      THEN 'expired' ELSE 'pending' END,
        last_error = CASE WHEN now() >= mg.end_at - make_interval(secs => :margin)
                          THEN 'end time reached' ELSE m.last_error END,
        token = NULL, lease_until = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token), mailing mg
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ('queued', 'retrying')
      AND mg.id = m.mailing_id
    RETURNING m.id, m.status
""")

STOPPED_MAILINGS = text("""
    SELECT id, CASE WHEN deleted_at IS NOT NULL OR status = 'cancelled' THEN 'cancelled'
                    ELSE 'pending' END AS becomes
    FROM mailing
    WHERE id = ANY(CAST(:ids AS bigint[])) AND (status <> 'running' OR deleted_at IS NOT NULL)
""")

DEAD_LETTER_POISON = text(f"""
    UPDATE message m SET status = 'failed', token = NULL, lease_until = NULL, updated_at = now(),
        last_error = :reason
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ({OPEN_STATUSES_SQL})
    RETURNING m.id, m.status
""")


@dataclass(frozen=True, slots=True)
class Claimed:
    message_id: int
    token: int
    status: str
    mailing_id: int
    client_id: int
    attempts: int
    phone: str
    text: str
    seconds_to_end: float  # at `claimed_at`, by the database's clock
    claimed_at: float  # time.monotonic() when the claim returned


@dataclass(frozen=True, slots=True)
class Result:
    message_id: int
    mailing_id: int
    token: int
    status: str  # sent | retrying | failed | expired | pending
    error: str | None = None
    delay_s: float = 0.0
    attempted: int = 1


async def claim(
    session: AsyncSession, jobs: Sequence[Job], *, margin_s: float, lease_s: float
) -> list[Claimed]:
    rows = await session.execute(
        CLAIM,
        {**_keys(jobs), "margin": margin_s, "lease": lease_s},
    )
    now = time.monotonic()
    claimed = [
        Claimed(
            r.id,
            r.token,
            r.status,
            r.mailing_id,
            r.client_id,
            r.attempts,
            r.phone,
            r.text,
            float(r.seconds_to_end),
            now,
        )
        for r in rows
    ]
    await session.commit()
    return claimed


async def write_results(
    session: AsyncSession, results: Sequence[Result], *, lease_s: float
) -> dict[int, str]:
    """Returns the status each written message now has; messages missing were not ours."""
    rows = await session.execute(
        WRITE_RESULTS,
        {
            "ids": [r.message_id for r in results],
            "tokens": [r.token for r in results],
            "statuses": [r.status for r in results],
            "errors": [r.error for r in results],
            "delays": [r.delay_s for r in results],
            "attempted": [r.attempted for r in results],
            "lease": lease_s,
        },
    )
    written = {row.id: row.status for row in rows}
    await session.commit()
    return written


async def release(session: AsyncSession, jobs: Sequence[Job], *, delay_s: float) -> None:
    await session.execute(
        RELEASE,
        {**_keys(jobs), "delay": delay_s},
    )
    await session.commit()


async def dead_letter_expired(
    session: AsyncSession, jobs: Sequence[Job], *, margin_s: float
) -> dict[int, str]:
    """Returns what each message became; messages missing had moved on (another token)."""
    rows = await session.execute(DEAD_LETTER_EXPIRED, {**_keys(jobs), "margin": margin_s})
    statuses = {row.id: row.status for row in rows}
    await session.commit()
    return statuses


async def dead_letter_poison(session: AsyncSession, jobs: Sequence[Job], reason: str) -> int:
    """Fails the job's messages still open under its tokens; returns how many."""
    rows = await session.execute(DEAD_LETTER_POISON, {**_keys(jobs), "reason": reason})
    failed = len(rows.all())
    await session.commit()
    return failed


def _keys(jobs: Sequence[Job]) -> dict[str, list[int]]:
    return {"ids": [job.message_id for job in jobs], "tokens": [job.token for job in jobs]}


async def stopped_mailings(session: AsyncSession, mailing_ids: list[int]) -> dict[int, str]:
    """Of these mailings, those no longer running: id -> what their held messages become."""
    rows = await session.execute(STOPPED_MAILINGS, {"ids": mailing_ids})
    return {row.id: row.becomes for row in rows}
