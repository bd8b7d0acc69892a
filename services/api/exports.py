"""CSV exports of the directory and of a mailing's messages, streamed by `COPY … TO STDOUT`:
constant memory whatever the row count. Every export takes one of the replica's bulk slots
(429 when they are taken), writes an audit entry (who, what, filters, rows), and writes text
cells a spreadsheet would run as formulas with a leading `'` (`shared.domain.csv_cells`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from services.api.bulk import ExportAudit, SlotStreamingResponse, iso, stream_csv
from services.api.clients.schemas import OperatorCode, Phone, Tag
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.mailings.service import get_mailing
from services.api.openapi import api_router
from services.api.pagination import ResourceId
from services.api.principal import Actor
from services.api.schemas import ErrorResponse
from shared.domain.csv_cells import neutralise_sql
from shared.domain.statuses import MessageStatus
from shared.settings import ApiSettings

router = api_router(prefix="", tags=["exports"])

CLIENTS_CSV = (
    "id,phone,operator_code,tag,timezone,opted_out_at,created_at,updated_at\n"
    "1,79123456789,912,vip,Europe/Moscow,,2026-12-01T10:00:00+00:00,2026-12-01T10:00:00+00:00\n"
    '2,79031234567,903,\'=HYPERLINK("x"),UTC,,2026-12-01T10:00:00+00:00,'
    "2026-12-01T10:00:00+00:00\n"
)
MESSAGES_CSV = (
    "message_id,client_id,phone,status,attempts,last_error,created_at,sent_at,provider,"
    "provider_message_id\n"
    "101,1,79123456789,delivered,1,,2026-12-01T10:00:00+00:00,2026-12-01T10:00:01+00:00,"
    "aggregator,0A1B2C3D\n"
)


def _csv(example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {"text/csv": {"example": example}},
            "description": "A CSV file; a text cell beginning with = + - @ tab or CR is written"
            " with a leading ' (the import takes it off again)",
        },
        429: {
            "model": ErrorResponse,
            "description": "BULK_CONCURRENCY exports and imports already run on this replica;"
            " try again after `Retry-After` seconds",
        },
    }


def attachment(request: Request, body: object, filename: str) -> StreamingResponse:
    """The CSV as a download, holding one of the replica's bulk slots until it ends."""
    slot = request.app.state.bulk_slots.take()
    return SlotStreamingResponse(
        body,  # type: ignore[arg-type]
        slot,
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/clients/export", response_class=StreamingResponse, responses=_csv(CLIENTS_CSV))
async def export_clients(
    request: Request,
    settings: SettingsDep,
    actor: ActorDep,
    operator_code: Annotated[OperatorCode | None, Query()] = None,
    tag: Annotated[Tag | None, Query()] = None,
    phone: Annotated[Phone | None, Query()] = None,
) -> StreamingResponse:
    """Live clients in id order as CSV, with the same filters as the list."""
    return clients_csv(request, settings, actor, operator_code, tag, phone)


def clients_csv(
    request: Request,
    settings: ApiSettings,
    actor: Actor,
    operator_code: str | None,
    tag: str | None,
    phone: str | None,
) -> StreamingResponse:
    """The clients export for the REST route and the console's download."""
    conditions: list[sql.Composable] = [sql.SQL("deleted_at IS NULL")]
    filters = {"operator_code": operator_code, "tag": tag, "phone": phone}
    for column, value in filters.items():
        if value is not None:
            conditions.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(value)))
    query = sql.SQL(
        "SELECT id, {}, {}, {}, {}, {} AS opted_out_at,"
        " {} AS created_at, {} AS updated_at FROM client"
        " WHERE {} ORDER BY id"
    ).format(
        neutralise_sql("phone"),
        neutralise_sql("operator_code"),
        neutralise_sql("tag"),
        neutralise_sql("timezone"),
        iso("opted_out_at"),
        iso("created_at"),
        iso("updated_at"),
        sql.SQL(" AND ").join(conditions),
    )
    audit = ExportAudit(
        actor, "export_clients", "client", None,
        {name: value for name, value in filters.items() if value is not None},
    )  # fmt: skip
    return attachment(
        request,
        stream_csv(request.app.state.engine, query, timeout_s=settings.bulk_timeout_s, audit=audit),
        "clients.csv",
    )


@router.get(
    "/mailings/{mailing_id}/messages/export",
    response_class=StreamingResponse,
    responses=_csv(MESSAGES_CSV),
)
async def export_messages(
    mailing_id: ResourceId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    status: Annotated[MessageStatus | None, Query()] = None,
) -> StreamingResponse:
    """A mailing's messages in id order as CSV, optionally of one status."""
    await get_mailing(session, mailing_id)
    await session.close()  # the export streams on a connection of its own
    conditions: list[sql.Composable] = [
        sql.SQL("m.mailing_id = {}").format(sql.Literal(mailing_id))
    ]
    if status is not None:
        conditions.append(sql.SQL("m.status = {}").format(sql.Literal(status.value)))
    query = sql.SQL(
        "SELECT m.id AS message_id, m.client_id, {}, m.status, m.attempts, {},"
        " {} AS created_at, {} AS sent_at, {}, {}"
        " FROM message m JOIN client c ON c.id = m.client_id"
        " WHERE {} ORDER BY m.id"
    ).format(
        neutralise_sql("c.phone"),
        neutralise_sql("m.last_error"),
        iso("m.created_at"),
        iso("m.sent_at"),
        neutralise_sql("m.provider"),
        neutralise_sql("m.provider_message_id"),
        sql.SQL(" AND ").join(conditions),
    )
    filters = {"status": status.value} if status is not None else {}
    audit = ExportAudit(actor, "export_messages", "mailing", mailing_id, filters)
    return attachment(
        request,
        stream_csv(request.app.state.engine, query, timeout_s=settings.bulk_timeout_s, audit=audit),
        f"mailing-{mailing_id}-messages.csv",
    )
