"""Bulk work on one database connection outside the request's session: COPY in and out of
PostgreSQL (psycopg 3) within a transaction whose statement timeout suits minutes of work.

Each export or import holds a pooled connection for as long as its client sends or reads, so
a replica runs at most BULK_CONCURRENCY of them at once (`BulkSlots`; more are a 429): the rest
of the pool stays free for /readyz, the console and every other request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from psycopg import AsyncConnection as PsycopgConnection
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.api.audit import service as audit_service
from services.api.errors import TooManyRequests
from services.api.principal import Actor

log = structlog.get_logger("api.bulk")

CHUNK_BYTES = 64 * 1024
# What a refused export or import is told to wait before trying again.
BUSY_RETRY_AFTER_S = 10


class BulkSlot:
    """One taken place among a replica's bulk transfers; `release()` is idempotent."""

    def __init__(self, slots: BulkSlots) -> None:
        self._slots: BulkSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.in_use -= 1
            self._slots = None


class BulkSlots:
    """How many exports and imports this replica runs at once: a new one over `limit` is
    refused at once (429 with Retry-After), never queued behind a slow reader."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> BulkSlot:
        if self.in_use >= self.limit:
            raise TooManyRequests(
                f"this replica is already running {self.limit} exports and imports;"
                f" try again in {BUSY_RETRY_AFTER_S} s",
                BUSY_RETRY_AFTER_S,
            )
        self.in_use += 1
        return BulkSlot(self)


class SlotStreamingResponse(StreamingResponse):
    """A streamed file that gives its bulk slot back when the response ends, however it ends
    (sent, the client gone, or never started)."""

    def __init__(self, content: AsyncIterator[bytes], slot: BulkSlot, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                # A reader gone mid-file leaves the stream suspended: close it now, so its
                # connection is back in the pool before the slot is.
                close = getattr(self.body_iterator, "aclose", None)
                if close is not None:
                    await close()
            finally:
                self.slot.release()


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


@dataclass(frozen=True)
class ExportAudit:
    """The audit entry an export writes: who, what, with which filters (the row count is added
    when the stream ends; an export cut short records `completed: false`)."""

    actor: Actor
    action: str
    target_type: str
    target_id: int | None
    filters: dict[str, Any]


async def stream_csv(
    engine: AsyncEngine,
    query: sql.Composable,
    *,
    timeout_s: float,
    audit: ExportAudit | None = None,
) -> AsyncIterator[bytes]:
    """`COPY (query) TO STDOUT` as CSV with a header, chunk by chunk as the server sends it:
    memory stays flat whatever the row count, and a slow reader slows the server down. With
    `audit`, the export's audit entry commits with it (or, cut short, is written apart)."""
    conn = await begin_bulk(engine, timeout_s=timeout_s)
    finished = False
    try:
        pg = await driver(conn)
        statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(query)
        # The server sends a row per message: pass them on in chunks of about CHUNK_BYTES,
        # not as a million tiny HTTP chunks.
        buffer = bytearray()
        async with pg.cursor() as cursor:
            async with cursor.copy(statement) as copy:
                async for data in copy:
                    buffer += data
                    if len(buffer) >= CHUNK_BYTES:
                        yield bytes(buffer)
                        buffer.clear()
            rows = cursor.rowcount
        if buffer:
            yield bytes(buffer)
        if audit is not None:
            await _record_export(conn, audit, {"rows": rows, "completed": True})
        await conn.commit()
        finished = True
    finally:
        # A reader gone mid-file cancels this stream: the connection is closed (psycopg gives
        # up a COPY cut short by closing it) and the entry written in a task of their own.
        ending = asyncio.create_task(_end_export(conn, engine, None if finished else audit))
        _ENDING.add(ending)
        ending.add_done_callback(_ENDING.discard)
        await asyncio.shield(ending)


_ENDING: set[asyncio.Task[None]] = set()


async def _end_export(conn: AsyncConnection, engine: AsyncEngine, cut: ExportAudit | None) -> None:
    try:
        if (await driver(conn)).closed:
            # psycopg closes the connection to give up a COPY cut short: not back to the pool.
            await conn.invalidate()
        await conn.close()
    except Exception as exc:
        log.info("an export cut short closed its connection", error=type(exc).__name__)
    if cut is not None:
        # The reader went away (or the query failed): the export still leaves a trace.
        await _record_cut_export(engine, cut)


async def _record_export(conn: AsyncConnection, audit: ExportAudit, result: dict[str, Any]) -> None:
    async with AsyncSession(bind=conn) as session:
        await audit_service.record(
            session,
            audit.actor,
            audit.action,
            audit.target_type,
            audit.target_id,
            {"filters": audit.filters, **result},
        )
        await session.flush()


async def _record_cut_export(engine: AsyncEngine, audit: ExportAudit) -> None:
    try:
        async with engine.begin() as conn:  # begun first: the session joins, not owns it
            await _record_export(conn, audit, {"rows": None, "completed": False})
    except Exception:
        log.exception("the audit entry of an interrupted export failed", action=audit.action)


def iso(column: str) -> sql.Composable:
    """A timestamptz column as ISO 8601 with its offset, as the JSON API writes it."""
    return sql.SQL("to_json({}) #>> '{{}}'").format(sql.Identifier(*column.split(".")))
