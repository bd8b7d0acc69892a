"""Client imports: upload a CSV (multipart, works without JavaScript; htmx adds an upload
progress bar), watch it run, read its counts and its rejected rows, download them all.

The upload calls `services.api.imports.service.start_import`, the REST API's own function:
the same streaming COPY into the staging table, the same rules, the same all-or-nothing
transaction and audit entry, the file streamed into COPY as it arrives (nothing is spooled to
/tmp, whatever its size; memory stays flat).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from services.api.deps import SessionDep, SettingsDep
from services.api.errors import ApiError
from services.api.exports import attachment
from services.api.imports import service
from services.api.imports.schemas import OnConflict
from services.api.imports.upload import MultipartUpload, multipart_upload
from services.api.pagination import ResourceId
from services.api.ui.deps import (
    CSRF_FIELD,
    CSRF_HEADER,
    AdminUserDep,
    LiveUserDep,
    UserDep,
    check_csrf,
)
from services.api.ui.pages.common import see_other
from services.api.ui.templating import gettext_for, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
REJECTED_SHOWN = 100  # on the page; every one of them in the CSV


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
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The upload streams into the import as it arrives, as the REST import does: the CSRF
    token comes from the X-CSRF-Token header (htmx), the query, or the form's `csrf_token`
    field, which the form sends before its file; nothing is spooled to disk."""
    _ = gettext_for(request)
    upload = multipart_upload(request)
    fields = await upload.fields() if upload is not None else {}
    check_csrf(
        request,
        user,
        request.headers.get(CSRF_HEADER)
        or request.query_params.get(CSRF_FIELD)
        or fields.get(CSRF_FIELD),
    )
    errors: dict[str, str] = {}
    chosen = fields.get("on_conflict", "").strip() or OnConflict.SKIP.value
    if chosen not in {c.value for c in OnConflict}:
        errors["on_conflict"] = _("Choose what an existing phone does: skip or update.")
    if upload is None:
        errors["file"] = _("Choose a CSV file.")
    record = None
    status_code = 422
    headers: dict[str, str] = {}
    if not errors:
        assert upload is not None
        key = fields.get("import_key", "").strip()
        try:
            record, _replayed = await service.start_import(
                engine=request.app.state.engine,
                session_factory=request.app.state.session_factory,
                tasks=request.app.state.import_tasks,
                chunks=_file_chunks(upload),
                on_conflict=chosen,
                idempotency_key=f"console:{key}" if key else None,
                actor=user.actor(request),
                timeout_s=settings.bulk_timeout_s,
                slots=request.app.state.bulk_slots,
            )
        except _NoFile:
            errors["file"] = _("Choose a CSV file.")
        except ApiError as exc:
            errors["file"] = exc.detail
            status_code = 429 if exc.status_code == 429 else 422
            headers = exc.headers or {}
    if record is None:
        imports = await service.recent_imports(session, limit=PAGE_SIZE)
        context = _list_context(request, imports, None) | {"errors": errors, "on_conflict": chosen}
        response = render(
            request, "imports.html", {"user": user, **context}, status_code=status_code
        )
        response.headers.update(headers)
        return response
    url = str(request.url_for("ui_import", import_id=record.id).path)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": f"{url}?notice=uploaded"})
    return see_other(url, notice="uploaded")


class _NoFile(Exception):
    """The form came without a file (or with an empty one): nothing was imported."""


async def _file_chunks(upload: MultipartUpload) -> AsyncIterator[bytes]:
    """The file's bytes; a form without a file, or with an empty one, is `_NoFile`."""
    empty = True
    try:
        async for chunk in upload.chunks():
            empty = empty and not chunk
            yield chunk
    except ApiError:
        if empty:
            raise _NoFile from None
        raise
    if empty:
        raise _NoFile


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
    return attachment(
        request,
        service.rejected_csv(
            request.app.state.engine,
            import_id,
            timeout_s=settings.bulk_timeout_s,
            actor=user.actor(request),
        ),
        f"import-{import_id}-rejected.csv",
    )
