from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.api.deps import ActorDep, AdminActorDep, SessionDep, SettingsDep
from services.api.exports import attachment
from services.api.idempotency import key_header
from services.api.imports import service
from services.api.imports.schemas import ImportDetail, ImportOut, OnConflict, RejectedRow
from services.api.imports.upload import upload_chunks
from services.api.openapi import api_router
from services.api.pagination import AfterId, Limit, ResourceId, next_after_id
from services.api.schemas import ErrorResponse, Page

router = api_router(prefix="/clients/imports", tags=["imports"])

CSV_EXAMPLE = (
    "phone,tag,timezone,operator_code,opted_out\n"
    "79123456789,vip,Europe/Moscow,,\n"
    "79031234567,,Asia/Yekaterinburg,903,true\n"
)

IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A CSV with a header row: phone, tag, timezone, and optionally"
        " operator_code (empty: derived from the phone) and opted_out (true/false, 1/0, yes/no;"
        " empty leaves an existing client's opt-out as it is). As a `text/csv` body or as the"
        " field `file` of a `multipart/form-data` body.",
        "content": {
            "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}

ImportKey = Annotated[
    str | None,
    key_header("Sending the same file again with the same key imports it once"),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImportOut,
    openapi_extra=IMPORT_BODY,
    responses={
        202: {"description": "Uploaded; the import runs on (poll `Location`)"},
        413: {"model": ErrorResponse, "description": "The file is over IMPORT_MAX_BYTES"},
        429: {
            "model": ErrorResponse,
            "description": "BULK_CONCURRENCY exports and imports already run on this replica;"
            " try again after `Retry-After` seconds",
        },
        415: {"model": ErrorResponse, "description": "Neither text/csv nor multipart/form-data"},
        422: {
            "model": ErrorResponse,
            "description": "The file cannot be read (header, encoding, an unclosed quote,"
            " a line over 8,192 characters)"
            " or the Idempotency-Key was used for another file; nothing was imported",
        },
    },
)
async def import_clients(
    request: Request,
    response: Response,
    settings: SettingsDep,
    actor: AdminActorDep,
    on_conflict: Annotated[
        OnConflict, Query(description="What a phone that already has a live client does")
    ] = OnConflict.SKIP,
    idempotency_key: ImportKey = None,
) -> ImportOut:
    """Import clients from a CSV, streamed into the database as it arrives. Answers once the
    file is in; rows are then checked by the same rules as `POST /clients` and imported in one
    transaction: the import changes the directory whole or not at all."""
    record, replayed = await service.start_import(
        engine=request.app.state.engine,
        session_factory=request.app.state.session_factory,
        tasks=request.app.state.import_tasks,
        chunks=upload_chunks(request),
        on_conflict=on_conflict.value,
        idempotency_key=idempotency_key,
        actor=actor,
        timeout_s=settings.bulk_timeout_s,
        slots=request.app.state.bulk_slots,
    )
    response.headers["Location"] = f"/api/v1/clients/imports/{record.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ImportOut.model_validate(record)


@router.get("", response_model=Page[ImportOut])
async def list_imports(
    session: SessionDep, limit: Limit = 100, after_id: AfterId = 0
) -> Page[ImportOut]:
    """Every import, oldest first; keyset-paginated with `after_id`."""
    imports = await service.list_imports(session, limit=limit, after_id=after_id)
    return Page[ImportOut](
        items=[ImportOut.model_validate(i) for i in imports],
        next_after_id=next_after_id([i.id for i in imports], limit),
    )


@router.get("/{import_id}", response_model=ImportDetail)
async def get_import(import_id: ResourceId, session: SessionDep) -> ImportDetail:
    """An import's status and counts, with its first 1,000 rejected rows."""
    record = await service.get_import(session, import_id)
    rejected = await service.rejected_rows(session, import_id)
    return ImportDetail.model_validate(
        {
            **ImportOut.model_validate(record).model_dump(),
            "rejected_rows": [RejectedRow.model_validate(r) for r in rejected],
        }
    )


@router.get(
    "/{import_id}/rejected",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"example": "line,field,reason,phone,..."}}}},
)
async def import_rejected_rows(
    import_id: ResourceId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
) -> StreamingResponse:
    """Every rejected row as CSV: its line, the field at fault, why, and the file's values
    (a value beginning with = + - @ tab or CR written with a leading ')."""
    await service.get_import(session, import_id)
    await session.close()  # the CSV streams on a connection of its own
    return attachment(
        request,
        service.rejected_csv(
            request.app.state.engine, import_id, timeout_s=settings.bulk_timeout_s, actor=actor
        ),
        f"import-{import_id}-rejected.csv",
    )
