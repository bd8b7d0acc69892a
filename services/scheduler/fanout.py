"""Fan-out: one message row per matching client, in resumable keyset chunks.

Each chunk takes the next `limit` matching clients after the mailing's cursor (by client id, up
to the recipient snapshot `fanout_max_client_id`), inserts their messages with
`ON CONFLICT DO NOTHING`, and moves the cursor to the highest client id it reached, all in one
transaction: a restart resumes where it stopped and never creates a message twice. A chunk is
bounded in matching rows (a dense filter makes no giant chunk) and in the id range it scans
(a sparse one takes one chunk, not dozens of empty ranges, yet no chunk scans the whole
directory). Memory is flat: no client ever comes into Python.

Fairness: each chunk goes to the mailing whose fan-out waited longest (`fanout_advanced_at`,
a mailing not yet fanned out first), so a small mailing created during a million-row fan-out
gets its messages after one chunk of the big one, not after all of them. A mailing's first
chunk is small, so its first sends are leased right after it; `FOR NO KEY UPDATE SKIP LOCKED`
keeps two schedulers off the same mailing.

Statistics: a fan-out grows its mailing's partition of `message` far faster than autovacuum's
ANALYZE follows (a million rows in under 20 s). Plans made on the statistics of the partition
as it was (a few rows, or other mailings' finished messages) read the new mailing's messages
as a handful, and pick a scan of all of them for a lookup of a batch by id: measured, the
senders' result writes went from 3 ms to 300-800 ms and sending during a 1,000,000-row
fan-out fell to a third (docs/BENCHMARKS.md). So after a chunk the scheduler analyzes the
partition once its rows changed by as many as it held at the last ANALYZE (and at least
`ANALYZE_MIN_CHANGED`): a sample of 30,000 rows, about ten times over a 1,000,000-row fan-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import psycopg
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.filters import RecipientsSql
from shared.domain.frequency_cap import (
    FREQUENCY_CAP_REASON,
    cap_rules_sql,
    clients_at_cap_sql,
    effective_caps,
    format_caps,
    reservations_sql,
)
from shared.domain.lifecycle import S, sql, sql_in
from shared.domain.send_window import next_window_open_sql
from shared.domain.statuses import MailingStatus

# A mailing's first chunk: small, so its first jobs are published within a moment of the start.
FIRST_CHUNK_SIZE = 1_000
# Most client ids one chunk scans, whatever the filter matches (well under a second of scan).
MAX_SCAN_IDS = 1_000_000

PICK_MAILING = text(f"""
    SELECT id, fanout_cursor, fanout_max_client_id, fanout_advanced_at,
           filter_operator_codes, filter_tags, send_window_start, send_window_end,
           transactional, frequency_cap
    FROM mailing
    WHERE status IN ({sql_in([MailingStatus.RUNNING, MailingStatus.PAUSED])})
      AND fanout_done_at IS NULL AND deleted_at IS NULL
    ORDER BY fanout_advanced_at NULLS FIRST, started_at, id
    LIMIT 1
    -- Excludes another scheduler's pick but not the key-share locks of foreign-key checks
    -- (a new message_count row of this mailing, created by a lease meanwhile, need not wait).
    FOR NO KEY UPDATE SKIP LOCKED
""")

# The mailing's partition of `message` (migration 0007): created at its insert or activation
# already, so this only looks it up; it is created here when those could not (a lock timeout).
ENSURE_PARTITION = text("SELECT message_partition_ensure(CAST(:mailing_id AS bigint))")

# Rows changed since the partition's last ANALYZE before a chunk analyzes it: the partition
# has (at least) doubled, or a never analyzed one took this many.
ANALYZE_MIN_CHANGED = 10_000

STALE_PARTITION = text("""
    SELECT c.oid::regclass::text FROM pg_class c
    JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.oid = message_partition_of(CAST(:mailing_id AS bigint))
      AND s.n_mod_since_analyze >= greatest(CAST(:min_changed AS bigint), c.reltuples)
""")

ADVANCE = text("""
    UPDATE mailing
    SET fanout_cursor = :cursor,
        fanout_done_at = CASE WHEN :done THEN now() END,
        fanout_advanced_at = clock_timestamp(),
        updated_at = now()
    WHERE id = :mailing_id
""")


# Frequency caps: a chunk of a counted (not transactional) mailing first takes one advisory
# lock per block of 2^16 client ids its range covers, ascending, in its own statement; the
# chunk's INSERT, a statement later, sees every other chunk over those clients that committed
# (READ COMMITTED), and its own messages (reservations) are committed before the next one
# over them counts. So two mailings fanning out over the same clients at once never
# give a client more messages than the cap (docs/GUARDRAILS.md).
CAP_BLOCK_BITS = 16
LOCK_CLIENT_BLOCKS = text(f"""
    SELECT count(pg_advisory_xact_lock(hashtext('frequency_cap'), CAST(b AS int)))
    FROM generate_series(CAST(:low AS bigint) >> {CAP_BLOCK_BITS},
                         CAST(:high AS bigint) >> {CAP_BLOCK_BITS}) AS b
""")


@cache
def insert_chunk(*, by_operator_code: bool, by_tag: bool, capped: bool = False) -> TextClause:
    """The fan-out's one statement (which clients get a message, and when it is first due),
    for a filter shape: a sparse tag filter rides `ix_client_operator_code_tag`.
    Who may receive a mailing is `shared.domain.filters.RecipientsSql`, as in the check.
    `capped`: a client at the frequency cap (`:caps`) gets its message `cancelled` with the
    reason `frequency cap` (statistics count it): its sent messages from `client_contact`, its
    unsent ones from the counted mailings' keys, both over the chunk's id range."""
    recipients = RecipientsSql(
        "c",
        codes="CAST(:codes AS text[])" if by_operator_code else None,
        tags="CAST(:tags AS text[])" if by_tag else None,
    )
    recipient = ["c.id > :cursor", "c.id <= :high", *recipients.conditions()]
    not_before = next_window_open_sql("p.timezone", "CAST(:ws AS time)", "CAST(:we AS time)")
    # Capped: the chunk's clients at the cap in one pass over the chunk's id range of
    # `client_contact` and of the counted mailings' keys in `message` (a probe per client and
    # rule cost three times as much).
    rules, at_cap, join, capped_if = "", "", "", "false"
    if capped:
        rules = f"cap_rule AS MATERIALIZED {cap_rules_sql('CAST(:caps AS text)')},"
        low, high = "CAST(:cursor AS bigint)", "(SELECT max(id) FROM picked)"
        clients = clients_at_cap_sql(
            "cap_rule", reservations_sql(low=low, high=high), low=low, high=high
        )
        at_cap = f"at_cap AS MATERIALIZED ({clients}),"
        join = "LEFT JOIN at_cap a ON a.client_id = p.id"
        capped_if = "a.client_id IS NOT NULL"
    return text(f"""
        WITH {rules}
        picked AS MATERIALIZED (
            SELECT c.id, c.timezone FROM client c
            WHERE {" AND ".join(recipient)}
            ORDER BY c.id
            LIMIT :limit
        ),
        {at_cap}
        inserted AS (
            INSERT INTO message (mailing_id, client_id, not_before, status, last_error)
            SELECT :mailing_id, p.id, {not_before},
                   CASE WHEN {capped_if} THEN {sql(S.CANCELLED)} ELSE {sql(S.PENDING)} END,
                   CASE WHEN {capped_if} THEN '{FREQUENCY_CAP_REASON}' END
            FROM picked p {join}
            ON CONFLICT (mailing_id, client_id) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM inserted) AS created,
               (SELECT count(*) FROM picked) AS picked,
               (SELECT max(id) FROM picked) AS reached
    """)


@dataclass(frozen=True)
class ChunkResult:
    mailing_id: int
    created: int
    done: bool
    analyzed: str | None = None  # the partition this chunk analyzed, if it did


@dataclass(frozen=True)
class ChunkPlan:
    """Where a chunk starts, how far it may scan and how many clients it may take."""

    cursor: int
    high: int
    limit: int

    def next_cursor(self, picked: int, reached: int | None) -> int:
        # A full chunk stops at the last client it took; a short one covered its whole range.
        if picked >= self.limit and reached is not None:
            return reached
        return self.high


def plan_chunk(
    cursor: int | None, max_client_id: int | None, *, first: bool, chunk_size: int
) -> ChunkPlan:
    low = cursor or 0
    limit = min(FIRST_CHUNK_SIZE, chunk_size) if first else chunk_size
    high = min(max_client_id or 0, low + max(MAX_SCAN_IDS, limit))
    return ChunkPlan(low, max(high, low), limit)


async def fanout_chunk(
    session: AsyncSession, chunk_size: int, *, frequency_cap: str | None = None
) -> ChunkResult | None:
    """Create the messages of the next chunk of one mailing; None when no fan-out is pending.
    `frequency_cap`: FREQUENCY_CAP, for mailings without a cap of their own."""
    row = (await session.execute(PICK_MAILING)).one_or_none()
    if row is None:
        await session.rollback()
        return None
    plan = plan_chunk(
        row.fanout_cursor,
        row.fanout_max_client_id,
        first=row.fanout_advanced_at is None,
        chunk_size=chunk_size,
    )
    if row.fanout_advanced_at is None:
        await session.execute(ENSURE_PARTITION, {"mailing_id": row.id})
    created = 0
    cursor = plan.high
    if plan.high > plan.cursor:
        codes = list(row.filter_operator_codes or [])
        tags = list(row.filter_tags or [])
        caps = effective_caps(
            row.frequency_cap, frequency_cap, transactional=bool(row.transactional)
        )
        statement = insert_chunk(by_operator_code=bool(codes), by_tag=bool(tags), capped=bool(caps))
        if not row.transactional:
            await session.execute(LOCK_CLIENT_BLOCKS, {"low": plan.cursor + 1, "high": plan.high})
        result = (
            await session.execute(
                statement,
                {
                    "mailing_id": row.id,
                    "cursor": plan.cursor,
                    "high": plan.high,
                    "limit": plan.limit,
                    "codes": codes,
                    "tags": tags,
                    "ws": row.send_window_start,
                    "we": row.send_window_end,
                    "caps": format_caps(caps),
                },
            )
        ).one()
        created = int(result.created)
        cursor = plan.next_cursor(int(result.picked), result.reached)
    done = cursor >= (row.fanout_max_client_id or 0)
    await session.execute(ADVANCE, {"mailing_id": row.id, "cursor": cursor, "done": done})
    await session.commit()
    analyzed = await analyze_if_grown(session, row.id) if created else None
    return ChunkResult(row.id, created, done, analyzed)


async def analyze_if_grown(session: AsyncSession, mailing_id: int) -> str | None:
    """ANALYZE the mailing's partition if it changed enough since its last ANALYZE; returns
    its name when it did. An ANALYZE under way (autovacuum's) is left to finish: no wait."""
    partition = await session.scalar(
        STALE_PARTITION, {"mailing_id": mailing_id, "min_changed": ANALYZE_MIN_CHANGED}
    )
    if partition is None:
        await session.rollback()
        return None
    await session.execute(text("SET LOCAL lock_timeout = '100ms'"))
    try:
        # The name comes from the catalogue (regclass output, quoted where needed).
        await session.execute(text(f"ANALYZE {partition}"))
    except DBAPIError as error:
        await session.rollback()
        if isinstance(error.orig, psycopg.errors.LockNotAvailable):
            return None
        raise
    await session.commit()
    return partition
