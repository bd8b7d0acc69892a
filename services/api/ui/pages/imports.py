"""Client imports: upload a CSV (multipart, works without JavaScript; htmx adds an upload
progress bar), watch it run, read its counts and its rejected rows, download them all.

The upload calls `services.api.imports.service.start_import`, the REST API's own function:
the same streaming COPY into the staging table, the same rules, the same all-or-nothing
transaction and audit entry. (Starlette parses the form first, for the CSRF field: the file
is spooled to a temporary file beyond 1 MB, then streamed into COPY; memory stays flat.)
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from services.api.deps import SessionDep, SettingsDep
from services.api.errors import ApiError
from services.api.imports import service
from services.api.imports.schemas import OnConflict
from services.api.pagination import ResourceId
from services.api.ui.deps import AdminUserDep, CsrfDep, LiveUserDep, UserDep
from services.api.ui.pages.common import form_text, see_other
from services.api.ui.templating import gettext_for, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
REJECTED_SHOWN = 100  # on the page; every one of them in the CSV
CHUNK_BYTES = 256 * 1024


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK_BYTES):
        yield chunk


def _list_context(request: Request, imports: list[Any], before: int | None) -> dict[str, Any]:
    return {
        "section": "imports",
        "imports": imports,
        "next_before": imports[-1].id if len(imports) == PAGE_SIZE else None,
        "first_page": before is None,
        "on_conflict": OnConflict.SKIP.value,
        "import_key": secrets.token_urlsafe(16),
        "errors": {},
    }


@router.get("/ui/imports", name="ui_imports", response_class=HTMLResponse)
async def imports_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> HTMLResponse:
    imports = await service.recent_imports(session, limit=PAGE_SIZE, before_id=before)
    return render(
        request, "imports.html", {"user": user, **_list_context(request, imports, before)}
    )


@router.post("/ui/imports", name="ui_import_upload", response_class=HTMLResponse)
async def import_upload(
    request: Request,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    _ = gettext_for(request)
    form = await request.form()
    errors: dict[str, str] = {}
    chosen = form_text(form, "on_conflict") or OnConflict.SKIP.value
    if chosen not in {c.value for c in OnConflict}:
        errors["on_conflict"] = _("Choose what an existing phone does: skip or update.")
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        errors["file"] = _("Choose a CSV file.")
    record = None
    if not errors:
        assert isinstance(upload, UploadFile)
        key = form_text(form, "import_key")
        try:
            record, _replayed = await service.start_import(
                engine=request.app.state.engine,
                session_factory=request.app.state.session_factory,
                tasks=request.app.state.import_tasks,
                chunks=_chunks(upload),
                on_conflict=chosen,
                idempotency_key=f"console:{key}" if key else None,
                actor=user.actor(request),
                timeout_s=settings.bulk_timeout_s,
            )
        except ApiError as exc:
            errors["file"] = exc.detail
    if record is None:
        imports = await service.recent_imports(session, limit=PAGE_SIZE)
        context = _list_context(request, imports, None) | {"errors": errors, "on_conflict": chosen}
        return render(request, "imports.html", {"user": user, **context}, status_code=422)
    url = str(request.url_for("ui_import", import_id=record.id).path)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": f"{url}?notice=uploaded"})
    return see_other(url, notice="uploaded")


async def _detail(session: Any, import_id: int) -> dict[str, Any]:
    record = await service.get_import(session, import_id)  # a dead import reads as failed
    rejected = await service.rejected_rows(session, import_id, limit=REJECTED_SHOWN)
    return {
        "section": "imports",
        "record": record,
        "rejected_rows": rejected,
        "rejected_shown": REJECTED_SHOWN,
        "live": record.status == "running",
    }


@router.get("/ui/imports/{import_id}", name="ui_import", response_class=HTMLResponse)
async def import_page(
    request: Request, import_id: ResourceId, user: UserDep, session: SessionDep
) -> HTMLResponse:
    return render(request, "import.html", {"user": user, **await _detail(session, import_id)})


@router.get("/ui/imports/{import_id}/live", name="ui_import_live", response_class=HTMLResponse)
async def import_live(
    request: Request, import_id: ResourceId, user: LiveUserDep, session: SessionDep
) -> HTMLResponse:
    """The import's status, counts and rejected rows; it stops asking once the import ends."""
    context = await _detail(session, import_id)
    return render(request, "partials/import_live.html", {"user": user, **context})


@router.get("/ui/imports/{import_id}/rejected.csv", name="ui_import_rejected")
async def import_rejected(
    request: Request,
    import_id: ResourceId,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
) -> StreamingResponse:
    """Every rejected row as CSV (the REST API's own stream), for a signed-in user only."""
    await service.get_import(session, import_id)
    await session.close()
    return StreamingResponse(
        service.rejected_csv(
            request.app.state.engine, import_id, timeout_s=settings.bulk_timeout_s
        ),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-rejected.csv"'},
    )
