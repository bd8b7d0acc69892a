"""The sender's database statements: one claim and one result write per micro-batch."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import namedtuple_row
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.domain.end_time import END_REACHED, seconds_to_end_sql, too_late_to_start_sql
from shared.domain.frequency_cap import (
    FREQUENCY_CAP_REASON,
    cap_rules_sql,
    open_reservations_sql,
    over_cap_sql,
)
from shared.domain.lifecycle import (
    CLAIMABLE,
    DELIVERY_LANDS_ON,
    OPEN,
    S,
    mailing_stopped_sql,
    sql,
    sql_in,
)
from shared.domain.opt_out import OPTED_OUT_REASON, opted_out_sql
from shared.domain.send_window import next_window_open_sql, window_open_sql
from shared.domain.statuses import MailingStatus, MessageStatus
from shared.domain.test_send import end_at_sql
from shared.messaging import Job

log = structlog.get_logger("sender")
T = TypeVar("T")

_WINDOW_OPEN = window_open_sql("c.timezone", "mg.send_window_start", "mg.send_window_end")
_NEXT_OPEN = next_window_open_sql("c.timezone", "mg.send_window_start", "mg.send_window_end")
# A test send's end is its own deadline (shared.domain.test_send), a message's its mailing's.
_END_AT = end_at_sql("m", "mg")
_TOO_LATE = too_late_to_start_sql(_END_AT, ":margin")
_OPTED_OUT = opted_out_sql("c")
# A test send goes to a phone, not a client: a client with that phone who opted out since the
# test was made stops it as they would stop their own message (a probe of the live-phone index).
_TEST_OPTED_OUT = (
    "EXISTS (SELECT 1 FROM client tc WHERE tc.phone = m.phone AND tc.deleted_at IS NULL"
    f" AND {opted_out_sql('tc')})"
)
_OPTED_OUT_ANY = f"CASE WHEN m.is_test THEN {_TEST_OPTED_OUT} ELSE {_OPTED_OUT} END"
# A deleted mailing or client, or a client that opted out: whatever was not sent is cancelled.
_CANCELLED = f"{mailing_stopped_sql('mg')} OR c.deleted_at IS NOT NULL OR {_OPTED_OUT_ANY}"

# A frequency cap set or lowered since the fan-out: the client is at the cap not counting this
# message's own reservation (shared/domain/frequency_cap.py). A transactional mailing has none;
# a mailing's own cap overrides FREQUENCY_CAP (`:frequency_cap`). Test sends never get here.
_CAPS = (
    "CASE WHEN mg.transactional THEN NULL"
    " ELSE coalesce(mg.frequency_cap, CAST(:frequency_cap AS text)) END"
)
_AT_CAP = over_cap_sql(
    "m.client_id", cap_rules_sql(_CAPS), reserved=open_reservations_sql("m.client_id"), own="1"
)

# `message` is partitioned by mailing id (migration 0007): every statement below names its
# messages' mailings as a constant list too, so PostgreSQL plans only their partitions (an id
# alone would make it visit every partition's key index).
# The ids as a constant array too: the key index then finds the batch's rows whatever the
# planner believes of a partition's size (statistics taken before its mailing's rows came).
_OF_MAILINGS = (
    "m.mailing_id = ANY(CAST(:mailing_ids AS bigint[])) AND m.id = ANY(CAST(:ids AS bigint[]))"
)

# Decides, in the database's clock, what each job's message becomes: `sending` when it may go
# out now; `cancelled`, `expired`, or back to `pending` (paused mailing, closed send window)
# otherwise. A test send (no client; its own phone) is not held by the mailing's status or send
# window. Jobs with a stale token or a message in another status match nothing.
CLAIM = text(f"""
    WITH job AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    ),
    target AS (
        SELECT m.id, job.token AS job_token,
            CASE
                WHEN {_CANCELLED} THEN {sql(S.CANCELLED)}
                WHEN {_TOO_LATE} THEN {sql(S.EXPIRED)}
                WHEN m.is_test THEN {sql(S.SENDING)}
                WHEN mg.status <> {sql(MailingStatus.RUNNING)} THEN {sql(S.PENDING)}
                WHEN NOT {_WINDOW_OPEN} THEN {sql(S.PENDING)}
                WHEN {_AT_CAP} THEN {sql(S.CANCELLED)}
                ELSE {sql(S.SENDING)}
            END AS next_status,
            {_NEXT_OPEN} AS next_open, {_OPTED_OUT_ANY} AS opted_out, {_CANCELLED} AS stopped,
            coalesce(m.phone, c.phone) AS phone, mg.text,
            {seconds_to_end_sql(_END_AT)} AS seconds_to_end,
            -- The route key (PROVIDERS_FILE); a test send: the code of its phone.
            coalesce(c.operator_code, substr(m.phone, 2, 3)) AS operator_code
        FROM message m
        JOIN job ON job.id = m.id AND job.token = m.token
        JOIN mailing mg ON mg.id = m.mailing_id
        LEFT JOIN client c ON c.id = m.client_id
        WHERE m.status IN ({sql_in(CLAIMABLE)}) AND {_OF_MAILINGS}
        ORDER BY m.id
        FOR UPDATE OF m
    )
    UPDATE message m SET
        status = t.next_status,
        token = CASE WHEN t.next_status = {sql(S.SENDING)} THEN m.token END,
        lease_until = CASE WHEN t.next_status = {sql(S.SENDING)}
                           THEN now() + make_interval(secs => :lease) END,
        not_before = CASE WHEN t.next_status = {sql(S.PENDING)} THEN t.next_open
                          ELSE m.not_before END,
        last_error = CASE WHEN t.next_status = {sql(S.EXPIRED)} THEN '{END_REACHED}'
                          WHEN t.next_status = {sql(S.CANCELLED)} AND t.opted_out
                          THEN '{OPTED_OUT_REASON}'
                          WHEN t.next_status = {sql(S.CANCELLED)} AND NOT t.stopped
                          THEN '{FREQUENCY_CAP_REASON}'
                          ELSE m.last_error END,
        updated_at = now()
    FROM target t
    WHERE m.id = t.id AND {_OF_MAILINGS}
    RETURNING m.id, t.job_token AS token, m.status, m.mailing_id, m.client_id, m.attempts,
              t.phone, t.text, t.seconds_to_end, m.is_test, t.operator_code
""")

# `sent` is a fact and lands on any message not sent or failed (DELIVERY_LANDS_ON); every
# other outcome lands only while this sender still holds the message (same token, `sending`).
WRITE_RESULTS = text(f"""
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:statuses AS text[]),
            CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:attempted AS int[]),
            CAST(:providers AS text[]), CAST(:provider_ids AS text[])
        ) AS r(id, token, status, error, delay_s, attempted, provider, provider_message_id)
        ORDER BY id
    )
    UPDATE message m SET
        status = r.status,
        token = CASE WHEN r.status = {sql(S.RETRYING)} THEN m.token END,
        lease_until = CASE WHEN r.status = {sql(S.RETRYING)}
                           THEN now() + make_interval(secs => r.delay_s + :lease) END,
        not_before = CASE WHEN r.status IN ({sql_in([S.RETRYING, S.PENDING])})
                          THEN now() + make_interval(secs => r.delay_s) ELSE m.not_before END,
        attempts = m.attempts + r.attempted,
        last_error = coalesce(r.error, m.last_error),
        sent_at = CASE WHEN r.status = {sql(S.SENT)} THEN now() ELSE m.sent_at END,
        -- Who took it and their id for it (receipts match by both); kept when not sent.
        provider = CASE WHEN r.status = {sql(S.SENT)} THEN r.provider ELSE m.provider END,
        provider_message_id = CASE WHEN r.status = {sql(S.SENT)} THEN r.provider_message_id
                                   ELSE m.provider_message_id END,
        updated_at = now()
    FROM r
    WHERE m.id = r.id AND {_OF_MAILINGS}
      AND ((r.status = {sql(S.SENT)} AND m.status IN ({sql_in(DELIVERY_LANDS_ON)}))
           OR (m.token = r.token AND m.status = {sql(S.SENDING)}))
    RETURNING m.id, m.status
""")

# Give leased jobs back without sending (breaker open): no attempt is spent.
RELEASE = text(f"""
    UPDATE message m SET status = {sql(S.PENDING)}, token = NULL, lease_until = NULL,
        not_before = greatest(m.not_before, now() + make_interval(secs => :delay)),
        updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ({sql_in(CLAIMABLE)})
      AND {_OF_MAILINGS}
""")

# A job that sat in the send queue past its expiration: each of its messages is expired if the
# end time (as it is now) has come, else back to pending for the scheduler to queue again.
DEAD_LETTER_EXPIRED = text(f"""
    UPDATE message m SET
        status = CASE WHEN {_TOO_LATE} THEN {sql(S.EXPIRED)} ELSE {sql(S.PENDING)} END,
        last_error = CASE WHEN {_TOO_LATE} THEN '{END_REACHED}' ELSE m.last_error END,
        token = NULL, lease_until = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token), mailing mg
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ({sql_in(CLAIMABLE)})
      AND {_OF_MAILINGS} AND mg.id = m.mailing_id
    RETURNING m.id, m.status
""")

STOPPED_MAILINGS = text(f"""
    SELECT id, CASE WHEN deleted_at IS NOT NULL OR status = {sql(MailingStatus.CANCELLED)}
                    THEN {sql(S.CANCELLED)} ELSE {sql(S.PENDING)} END AS becomes
    FROM mailing
    WHERE id = ANY(CAST(:ids AS bigint[]))
      AND (status <> {sql(MailingStatus.RUNNING)} OR deleted_at IS NOT NULL)
""")

DEAD_LETTER_POISON = text(f"""
    UPDATE message m SET status = {sql(S.FAILED)}, token = NULL, lease_until = NULL,
        updated_at = now(), last_error = :reason
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS j(id, token)
    WHERE m.id = j.id AND m.token = j.token AND m.status IN ({sql_in(OPEN)})
      AND {_OF_MAILINGS}
    RETURNING m.id, m.status
""")


@dataclass(frozen=True, slots=True)
class Claimed:
    message_id: int
    token: int
    status: MessageStatus
    mailing_id: int
    client_id: int | None  # None for a test send
    attempts: int
    phone: str
    text: str
    seconds_to_end: (
        float  # at `claimed_at` or later, by the database's clock (a test: to its deadline)
    )
    claimed_at: float  # time.monotonic() when the claim was sent (before the database's now())
    is_test: bool = False
    operator_code: str = ""  # the client's (a test send: its phone's), for the route


@dataclass(frozen=True, slots=True)
class Result:
    message_id: int
    mailing_id: int
    token: int
    status: MessageStatus  # one of lifecycle.RESULT_STATUSES
    error: str | None = None
    delay_s: float = 0.0
    attempted: int = 1
    why: str = ""  # for logs and metrics only: which branch of the outcome policy
    # A sent message: the provider that took it and its id there (a long SMPP text: the first
    # part's). Without PROVIDERS_FILE: `default` and our own id.
    provider: str | None = None
    provider_message_id: str | None = None


# The two statements of every micro-batch (the claim, the result write) go to psycopg directly,
# on the session's own connection and in its transaction: SQLAlchemy's statement, parameter
# and row handling around them was a fifth of the sender's CPU. The SQL is the same text, its
# `:name` parameters in psycopg's `%(name)s` form.
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def psycopg_sql(clause: TextClause) -> str:
    assert "%" not in clause.text, "a literal % would need escaping"
    return _PARAM.sub(r"%(\1)s", clause.text)


_CLAIM_SQL = psycopg_sql(CLAIM)
_WRITE_RESULTS_SQL = psycopg_sql(WRITE_RESULTS)


async def _fetch(session: AsyncSession, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows (named tuples) of `sql` run on the session's connection, in its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    async with driver.cursor(row_factory=namedtuple_row) as cursor:
        await cursor.execute(sql, params)
        return await cursor.fetchall()


async def claim(
    session: AsyncSession,
    jobs: Sequence[Job],
    *,
    margin_s: float,
    lease_s: float,
    frequency_cap: str | None = None,
) -> list[Claimed]:
    # The time left and the lease are the database's, as of its now(): the start of this
    # transaction, which is no earlier than this moment. Counted from here, a slow claim (a
    # loaded database, a lock wait, a late loop) shortens what the sender believes it has;
    # counted from the answer, it lengthened it by the claim's latency, and requests went out
    # after the end time (the soak: up to 0.4 s after it on the wire).
    now = time.monotonic()
    rows = await _fetch(
        session,
        _CLAIM_SQL,
        {**_keys(jobs), "margin": margin_s, "lease": lease_s, "frequency_cap": frequency_cap},
    )
    claimed = [
        Claimed(
            r.id,
            r.token,
            MessageStatus(r.status),
            r.mailing_id,
            r.client_id,
            r.attempts,
            r.phone,
            r.text,
            float(r.seconds_to_end),
            now,
            r.is_test,
            r.operator_code or "",
        )
        for r in rows
    ]
    await session.commit()
    return claimed


async def write_results(
    session: AsyncSession, results: Sequence[Result], *, lease_s: float
) -> dict[int, MessageStatus]:
    """Returns the status each written message now has; messages missing were not ours."""
    rows = await _fetch(
        session,
        _WRITE_RESULTS_SQL,
        {
            "ids": [r.message_id for r in results],
            "tokens": [r.token for r in results],
            "statuses": [r.status.value for r in results],
            "errors": [r.error for r in results],
            "delays": [r.delay_s for r in results],
            "attempted": [r.attempted for r in results],
            "providers": [r.provider for r in results],
            "provider_ids": [r.provider_message_id for r in results],
            "mailing_ids": sorted({r.mailing_id for r in results}),
            "lease": lease_s,
        },
    )
    written = {row.id: MessageStatus(row.status) for row in rows}
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
) -> dict[int, MessageStatus]:
    """Returns what each message became; messages missing had moved on (another token)."""
    rows = await session.execute(DEAD_LETTER_EXPIRED, {**_keys(jobs), "margin": margin_s})
    statuses = {row.id: MessageStatus(row.status) for row in rows}
    await session.commit()
    return statuses


async def dead_letter_poison(session: AsyncSession, jobs: Sequence[Job], reason: str) -> int:
    """Fails the job's messages still open under its tokens; returns how many."""
    rows = await session.execute(DEAD_LETTER_POISON, {**_keys(jobs), "reason": reason})
    failed = len(rows.all())
    await session.commit()
    return failed


def _keys(jobs: Sequence[Job]) -> dict[str, list[int]]:
    return {
        "ids": [job.message_id for job in jobs],
        "tokens": [job.token for job in jobs],
        "mailing_ids": sorted({job.mailing_id for job in jobs}),
    }


async def stopped_mailings(
    session: AsyncSession, mailing_ids: list[int]
) -> dict[int, MessageStatus]:
    """Of these mailings, those no longer running: id -> what their held messages become."""
    rows = await session.execute(STOPPED_MAILINGS, {"ids": mailing_ids})
    return {row.id: MessageStatus(row.becomes) for row in rows}


async def with_retry(
    sessions: async_sessionmaker[AsyncSession],
    action: Callable[[AsyncSession], Awaitable[T]],
    what: str,
) -> T:
    """Keep trying through a database outage; the jobs stay unacked meanwhile."""
    pause = 0.1
    while True:
        try:
            async with sessions() as session:
                return await action(session)
        except Exception as exc:
            if what == "write results":
                metrics.RESULT_WRITE_RETRIES.inc()
            log.warning("database call failed; retrying", what=what, error=str(exc)[:200])
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
