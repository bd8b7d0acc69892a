"""Fan-out: one message row per matching client, in resumable chunks of the client id range.

Each chunk is one `INSERT … SELECT … ON CONFLICT DO NOTHING` over a slice of client ids and
moves the mailing's cursor in the same transaction, so a restart resumes where it stopped and
never creates a message twice. Memory is flat: no client ever comes into Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.sql import next_window_open

PICK_MAILING = text("""
    SELECT id, fanout_cursor, fanout_max_client_id, filter_operator_codes, filter_tags,
           send_window_start, send_window_end
    FROM mailing
    WHERE status IN ('running', 'paused') AND fanout_done_at IS NULL AND deleted_at IS NULL
    ORDER BY started_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
""")

INSERT_CHUNK = text(f"""
    INSERT INTO message (mailing_id, client_id, not_before)
    SELECT :mailing_id, c.id,
           {next_window_open("c.timezone", "CAST(:ws AS time)", "CAST(:we AS time)")}
    FROM client c
    WHERE c.id > :low AND c.id <= :high AND c.deleted_at IS NULL
      AND (cardinality(CAST(:codes AS text[])) = 0 OR c.operator_code = ANY(CAST(:codes AS text[])))
      AND (cardinality(CAST(:tags AS text[])) = 0 OR c.tag = ANY(CAST(:tags AS text[])))
    ON CONFLICT (mailing_id, client_id) DO NOTHING
""")

ADVANCE = text("""
    UPDATE mailing
    SET fanout_cursor = :high,
        fanout_done_at = CASE WHEN :high >= fanout_max_client_id THEN now() END,
        updated_at = now()
    WHERE id = :mailing_id
""")


@dataclass(frozen=True)
class ChunkResult:
    mailing_id: int
    created: int
    done: bool


async def fanout_chunk(session: AsyncSession, chunk_size: int) -> ChunkResult | None:
    """Create the messages of the next chunk of one mailing; None when no fan-out is pending."""
    row = (await session.execute(PICK_MAILING)).one_or_none()
    if row is None:
        await session.rollback()
        return None
    low = row.fanout_cursor or 0
    high = min(low + chunk_size, row.fanout_max_client_id or 0)
    created = 0
    if high > low:
        result = await session.execute(
            INSERT_CHUNK,
            {
                "mailing_id": row.id,
                "low": low,
                "high": high,
                "codes": row.filter_operator_codes,
                "tags": row.filter_tags,
                "ws": row.send_window_start,
                "we": row.send_window_end,
            },
        )
        created = result.rowcount  # type: ignore[attr-defined]
    await session.execute(ADVANCE, {"mailing_id": row.id, "high": high})
    await session.commit()
    return ChunkResult(row.id, created, high >= (row.fanout_max_client_id or 0))
