"""CSV exports of the directory and of a mailing's messages, streamed by `COPY … TO STDOUT`:
constant memory whatever the row count."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from services.api.bulk import iso, stream_csv
from services.api.clients.schemas import OperatorCode, Phone, Tag
from services.api.deps import SessionDep, SettingsDep
from services.api.mailings.service import get_mailing
from services.api.openapi import api_router
from services.api.pagination import ResourceId
from shared.domain.statuses import MessageStatus

router = api_router(prefix="", tags=["exports"])

CLIENTS_CSV = (
    "id,phone,operator_code,tag,timezone,opted_out_at,created_at,updated_at\n"
    "1,79123456789,912,vip,Europe/Moscow,,2026-12-01T10:00:00+00:00,2026-12-01T10:00:00+00:00\n"
)
MESSAGES_CSV = (
    "message_id,client_id,phone,status,attempts,last_error,created_at,sent_at\n"
    "101,1,79123456789,sent,1,,2026-12-01T10:00:00+00:00,2026-12-01T10:00:01+00:00\n"
)


def _csv(example: str) -> dict[int | str, dict[str, object]]:
    return {200: {"content": {"text/csv": {"example": example}}, "description": "A CSV file"}}


def _attachment(body: object, filename: str) -> StreamingResponse:
    return StreamingResponse(
        body,  # type: ignore[arg-type]
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/clients/export", response_class=StreamingResponse, responses=_csv(CLIENTS_CSV))
async def export_clients(
    request: Request,
    settings: SettingsDep,
    operator_code: Annotated[OperatorCode | None, Query()] = None,
    tag: Annotated[Tag | None, Query()] = None,
    phone: Annotated[Phone | None, Query()] = None,
) -> StreamingResponse:
    """Live clients in id order as CSV, with the same filters as the list."""
    conditions: list[sql.Composable] = [sql.SQL("deleted_at IS NULL")]
    for column, value in (("operator_code", operator_code), ("tag", tag), ("phone", phone)):
        if value is not None:
            conditions.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(value)))
    query = sql.SQL(
        "SELECT id, phone, operator_code, tag, timezone, {} AS opted_out_at,"
        " {} AS created_at, {} AS updated_at FROM client"
        " WHERE {} ORDER BY id"
    ).format(
        iso("opted_out_at"), iso("created_at"), iso("updated_at"), sql.SQL(" AND ").join(conditions)
    )
    return _attachment(
        stream_csv(request.app.state.engine, query, timeout_s=settings.bulk_timeout_s),
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
        "SELECT m.id AS message_id, m.client_id, c.phone, m.status, m.attempts, m.last_error,"
        " {} AS created_at, {} AS sent_at"
        " FROM message m JOIN client c ON c.id = m.client_id"
        " WHERE {} ORDER BY m.id"
    ).format(iso("m.created_at"), iso("m.sent_at"), sql.SQL(" AND ").join(conditions))
    return _attachment(
        stream_csv(request.app.state.engine, query, timeout_s=settings.bulk_timeout_s),
        f"mailing-{mailing_id}-messages.csv",
    )
