"""CSV imports of clients: stream the upload into a staging table (COPY), then validate and
upsert it set-based, all in one transaction of its own connection.

An import either commits whole (its clients, its rejected rows, its counts, its audit entry)
or changes nothing: a failure, a killed process or a lost connection rolls the transaction
back. Its `client_import` row is committed apart as soon as the upload is in, so progress can
be read; while the transaction is open it holds an advisory lock, so a `running` import whose
lock is free is known to be dead and is reported `failed`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from psycopg import sql as psql
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from services.api import audit, idempotency
from services.api.bulk import BulkSlot, BulkSlots, ExportAudit, begin_bulk, driver, stream_csv
from services.api.errors import NotFound, Unprocessable
from services.api.imports import sql
from services.api.imports.csv_rows import CsvFileError, CsvRows
from services.api.principal import Actor
from shared.domain.clients import known_timezones
from shared.domain.csv_cells import neutralise_sql
from shared.models import ClientImport, ClientImportRejection

log = structlog.get_logger("api.imports")

REJECTED_ROWS_SHOWN = 1_000


class ImportTasks:
    """The imports this process is finishing in the background; stopped with the app."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """For tests and the bench: until every import of this process has finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.wait()


async def _digest(chunks: AsyncIterator[bytes], on_conflict: str) -> str:
    digest = hashlib.sha256(on_conflict.encode() + b"\n")
    async for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _replay(earlier: ClientImport, fingerprint: str) -> ClientImport:
    return idempotency.replayed(
        earlier, fingerprint, fingerprint_column="fingerprint", what="file or on_conflict"
    )


async def start_import(
    *,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    tasks: ImportTasks,
    chunks: AsyncIterator[bytes],
    on_conflict: str,
    idempotency_key: str | None,
    actor: Actor,
    timeout_s: float,
    slots: BulkSlots,
) -> tuple[ClientImport, bool]:
    """Reads the whole upload into the staging table, records the import as `running` and
    leaves the rest to a background task. Returns the import and whether it is a replay.
    The import holds one of `slots` (a 429 when none is free) until it has finished."""
    if idempotency_key is not None:
        async with session_factory() as session:
            earlier = await idempotency.by_key(session, ClientImport, idempotency_key)
        if earlier is not None:
            return _replay(earlier, await _digest(chunks, on_conflict)), True

    slot = slots.take()
    try:
        conn = await begin_bulk(engine, timeout_s=timeout_s)
    except BaseException:
        slot.release()
        raise
    try:
        import_id = int((await conn.execute(text(sql.NEXT_ID))).scalar_one())
        await conn.execute(text(sql.LOCK), {"key": sql.LOCK_KEY, "import_id": import_id})
        await conn.execute(text(sql.CREATE_STAGING))
        digest = hashlib.sha256(on_conflict.encode() + b"\n")
        size = 0
        parser = CsvRows()
        pg = await driver(conn)
        try:
            async with pg.cursor() as cursor, cursor.copy(sql.COPY_STAGING) as copy:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    for row in parser.feed(chunk):
                        await copy.write_row(row)
                for row in parser.finish():
                    await copy.write_row(row)
        except CsvFileError as exc:
            # Nothing more goes to the database; the rest of the upload is read (and dropped)
            # so the client gets the 422 rather than a connection closed under its upload.
            await conn.rollback()
            async for _ in chunks:
                pass
            raise Unprocessable(f"the CSV cannot be imported: {exc}") from None
        await conn.execute(text("ANALYZE import_row"))
        record = ClientImport(
            id=import_id,
            status="running",
            on_conflict=on_conflict,
            actor=actor.name,
            idempotency_key=idempotency_key,
            fingerprint=digest.hexdigest(),
            bytes=size,
            rows=parser.rows,
        )
        async with session_factory() as session:
            session.add(record)
            try:
                await session.commit()
            except IntegrityError:
                # The same key won a race meanwhile: answer with that import.
                await session.rollback()
                earlier = (
                    await idempotency.by_key(session, ClientImport, idempotency_key)
                    if idempotency_key
                    else None
                )
                if earlier is None:
                    raise
                await conn.rollback()
                await conn.close()
                slot.release()
                return _replay(earlier, record.fingerprint), True
            await session.refresh(record)
    except BaseException:
        await conn.rollback()
        await conn.close()
        slot.release()
        raise
    log.info("import uploaded", import_id=import_id, rows=parser.rows, bytes=size)
    tasks.start(_finish(conn, session_factory, record, actor, slot))
    return record, False


async def _finish(
    conn: AsyncConnection,
    session_factory: async_sessionmaker[AsyncSession],
    record: ClientImport,
    actor: Actor,
    slot: BulkSlot,
) -> None:
    try:
        counts = await _validate_and_upsert(conn, record.id, record.on_conflict)
        async with AsyncSession(bind=conn) as session:
            await audit.record(
                session,
                actor,
                "import_clients",
                "client_import",
                record.id,
                {"on_conflict": record.on_conflict, "rows": record.rows, **counts},
            )
            await session.flush()
        await conn.execute(text(sql.FINISH), {"import_id": record.id, **counts})
        await conn.commit()
        log.info("import done", import_id=record.id, **counts)
    except BaseException as exc:
        await asyncio.shield(_fail(conn, session_factory, record.id, exc))
        if not isinstance(exc, Exception):
            raise
    finally:
        try:
            await asyncio.shield(conn.close())
        finally:
            slot.release()


async def _fail(
    conn: AsyncConnection,
    session_factory: async_sessionmaker[AsyncSession],
    import_id: int,
    exc: BaseException,
) -> None:
    log.error("import failed; nothing was changed", import_id=import_id, exc_info=exc)
    try:
        await conn.rollback()
    except Exception:  # the connection may be the thing that broke
        log.warning("rollback of a failed import failed", import_id=import_id)
    reason = "the api stopped" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__
    async with session_factory() as session:
        await session.execute(
            text(sql.FAIL),
            {"import_id": import_id, "error": f"{reason}; nothing was changed"},
        )
        await session.commit()


async def _validate_and_upsert(
    conn: AsyncConnection, import_id: int, on_conflict: str
) -> dict[str, int]:
    await conn.execute(text(sql.NORMALIZE_PHONES))
    await conn.execute(text(sql.CHECK_PHONES))
    await conn.execute(text(sql.CHECK_FIELDS), {"zones": known_timezones()})
    await conn.execute(text(sql.CHECK_REPEATS))
    rejected = int(
        (await conn.execute(text(sql.KEEP_REJECTIONS), {"import_id": import_id})).scalar_one()
    )
    checked = (await conn.execute(text(sql.VALID_ROWS))).one()
    valid = int(checked.valid)
    updated = 0
    await conn.execute(text(sql.TAKE_TURNS))
    if on_conflict == "update":
        row = (await conn.execute(text(sql.UPDATE_EXISTING))).one()
        updated = int(row.updated)
    created = int((await conn.execute(text(sql.INSERT_NEW))).scalar_one())
    return {
        "created": created,
        "updated": updated,
        "skipped": valid - created - updated,
        "rejected": rejected,
        "normalized": int(checked.normalized),
    }


async def get_import(session: AsyncSession, import_id: int) -> ClientImport:
    record = await session.get(ClientImport, import_id)
    if record is None:
        raise NotFound("import", import_id)
    if record.status == "running":
        orphaned = await session.scalar(
            text(sql.ORPHANED), {"key": sql.LOCK_KEY, "import_id": import_id}
        )
        if orphaned:
            # Re-read under the lock check: the import may have just finished.
            await session.execute(
                text(sql.FAIL),
                {
                    "import_id": import_id,
                    "error": "the process running it stopped; nothing was changed",
                },
            )
            await session.commit()
            await session.refresh(record)
    return record


async def rejected_rows(
    session: AsyncSession, import_id: int, limit: int = REJECTED_ROWS_SHOWN
) -> list[ClientImportRejection]:
    query = (
        select(ClientImportRejection)
        .where(ClientImportRejection.import_id == import_id)
        .order_by(ClientImportRejection.line)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def list_imports(session: AsyncSession, *, limit: int, after_id: int) -> list[ClientImport]:
    query = select(ClientImport).where(ClientImport.id > after_id).order_by(ClientImport.id)
    return list(await session.scalars(query.limit(limit)))


async def recent_imports(
    session: AsyncSession, *, limit: int, before_id: int | None = None
) -> list[ClientImport]:
    """Newest first (the console's list); keyset-paginated with `before_id`."""
    query = select(ClientImport).order_by(ClientImport.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(ClientImport.id < before_id)
    return list(await session.scalars(query))


def rejected_csv(
    engine: AsyncEngine, import_id: int, *, timeout_s: float, actor: Actor
) -> AsyncIterator[bytes]:
    """Every rejected row of an import as CSV (line, field, reason and the file's values),
    streamed on a connection of its own, its audit entry with it: the REST route and the
    console's download. The file's values go out formula-safe (`shared.domain.csv_cells`)."""
    columns = ("field", "reason", "phone", "tag", "timezone", "operator_code", "opted_out")
    query = psql.SQL(
        "SELECT line, {} FROM client_import_rejection WHERE import_id = {} ORDER BY line"
    ).format(
        psql.SQL(", ").join(neutralise_sql(column) for column in columns), psql.Literal(import_id)
    )
    audit = ExportAudit(actor, "export_rejected_rows", "client_import", import_id, {})
    return stream_csv(engine, query, timeout_s=timeout_s, audit=audit)
