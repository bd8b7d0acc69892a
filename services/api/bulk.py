"""Bulk work on one database connection outside the request's session: COPY in and out of
PostgreSQL (psycopg 3) within a transaction whose statement timeout suits minutes of work."""

from __future__ import annotations

from collections.abc import AsyncIterator

from psycopg import AsyncConnection as PsycopgConnection
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

CHUNK_BYTES = 64 * 1024


async def begin_bulk(engine: AsyncEngine, *, timeout_s: float) -> AsyncConnection:
    """A pooled connection in a transaction with the bulk statement timeout (the pool's
    default is for short statements); the caller commits or rolls back and closes it."""
    conn = await engine.connect()
    try:
        await conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
        await conn.execute(text("SET LOCAL TimeZone = 'UTC'"))
    except BaseException:
        await conn.close()
        raise
    return conn


async def driver(conn: AsyncConnection) -> PsycopgConnection:
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def stream_csv(
    engine: AsyncEngine, query: sql.Composable, *, timeout_s: float
) -> AsyncIterator[bytes]:
    """`COPY (query) TO STDOUT` as CSV with a header, chunk by chunk as the server sends it:
    memory stays flat whatever the row count, and a slow reader slows the server down."""
    conn = await begin_bulk(engine, timeout_s=timeout_s)
    try:
        pg = await driver(conn)
        statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(query)
        # The server sends a row per message: pass them on in chunks of about CHUNK_BYTES,
        # not as a million tiny HTTP chunks.
        buffer = bytearray()
        async with pg.cursor() as cursor, cursor.copy(statement) as copy:
            async for data in copy:
                buffer += data
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
        if buffer:
            yield bytes(buffer)
        await conn.commit()
    finally:
        await conn.close()


def iso(column: str) -> sql.Composable:
    """A timestamptz column as ISO 8601 with its offset, as the JSON API writes it."""
    return sql.SQL("to_json({}) #>> '{{}}'").format(sql.Identifier(*column.split(".")))
