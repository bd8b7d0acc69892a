"""Clients: the directory with search by phone and filters by tag and operator; create, edit,
delete, through `services.api.clients.service` (the REST API's own functions)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from services.api import exports
from services.api.clients import service
from services.api.clients.schemas import ClientCreate, normalizing_phones
from services.api.deps import SessionDep, SettingsDep
from services.api.errors import ApiError
from services.api.pagination import ResourceId
from services.api.ui.deps import AdminUserDep, CsrfDep, UserDep
from services.api.ui.pages.common import field_errors, form_text, see_other
from services.api.ui.templating import gettext_for, render, timezone_names
from shared.domain.clients import is_valid_operator_code, is_valid_phone
from shared.models import Client

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
FIELDS = ("phone", "operator_code", "tag", "timezone")


@router.get("/ui/clients", name="ui_clients", response_class=HTMLResponse)
async def clients_list(
    request: Request,
    user: UserDep,
    session: SessionDep,
    tag: str = Query("", max_length=100),
    operator_code: str = Query("", max_length=3),
    after: int = Query(0, ge=0, le=2**63 - 1),
) -> HTMLResponse:
    """The directory, filtered by tag and operator code in the URL (a view is a link). A phone
    is never in a URL we make: it is looked up by `POST /ui/clients/find`."""
    _ = gettext_for(request)
    tag, operator_code = tag.strip(), operator_code.strip()
    problems = {}
    if operator_code and not is_valid_operator_code(operator_code):
        problems["operator_code"] = _("An operator code is 3 digits, e.g. 912.")
    clients: list[Client] = []
    if not problems:
        clients = await service.list_clients(
            session,
            limit=PAGE_SIZE,
            after_id=after,
            operator_code=operator_code or None,
            tag=tag or None,
            phone=None,
        )
    return _list(request, user, clients, tag, operator_code, "", problems, after == 0)


def _list(
    request: Request,
    user: Any,
    clients: list[Client],
    tag: str,
    operator_code: str,
    phone: str,
    errors: dict[str, str],
    first_page: bool,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "clients.html",
        {
            "user": user,
            "section": "clients",
            "clients": clients,
            "phone": phone,
            "tag": tag,
            "operator_code": operator_code,
            "errors": errors,
            "next_after": clients[-1].id if len(clients) == PAGE_SIZE else None,
            "first_page": first_page,
        },
        status_code=status_code,
    )


@router.post("/ui/clients/find", name="ui_clients_find", response_class=HTMLResponse)
async def clients_find(
    request: Request, user: UserDep, _csrf: CsrfDep, session: SessionDep
) -> Response:
    """Find the live client with a phone: sent in the body (POST), so the phone never reaches
    a URL, an access log or the browser's history. Read-only, for viewers too; CSRF-checked."""
    _ = gettext_for(request)
    phone = form_text(await request.form(), "phone")
    if not is_valid_phone(phone):
        problem = _("Enter the whole phone: 7 and 10 digits, e.g. 79123456789.")
        return _list(request, user, [], "", "", phone, {"phone": problem}, True, 422)
    found = await service.list_clients(
        session, limit=1, after_id=0, operator_code=None, tag=None, phone=phone
    )
    if not found:
        return _list(request, user, [], "", "", phone, {}, True)
    return see_other(request.url_for("ui_client", client_id=found[0].id).path)


def _form(
    request: Request,
    user: Any,
    client: Client | None,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    if client is not None and not values:
        values = {name: getattr(client, name) for name in FIELDS}
        values["opted_out"] = "on" if client.opted_out_at is not None else ""
    return render(
        request,
        "client_form.html",
        {
            "user": user,
            "section": "clients",
            "client": client,
            "values": values,
            "errors": errors,
            "timezones": timezone_names(),
        },
        status_code=status_code,
    )


def _read(form: Any) -> tuple[dict[str, str], dict[str, Any]]:
    values = {name: form_text(form, name) for name in FIELDS}
    body: dict[str, Any] = dict(values)
    values["opted_out"] = "on" if form_text(form, "opted_out") else ""
    body["opted_out"] = bool(values["opted_out"])  # an unticked box opts the client back in
    if not body["operator_code"]:
        body["operator_code"] = None  # derived from the phone
    return values, body


def _validated(body: dict[str, Any]) -> ClientCreate:
    """The form's client; its phone may be written as people write it (8 916 123-45-67)."""
    with normalizing_phones():
        return ClientCreate.model_validate(body)


@router.get("/ui/clients/export.csv", name="ui_clients_export")
async def clients_export(
    request: Request,
    user: UserDep,
    settings: SettingsDep,
    tag: str = Query("", max_length=100),
    operator_code: str = Query("", max_length=3),
) -> Response:
    """The directory as CSV with the list's filters: the REST export's own stream."""
    _ = gettext_for(request)
    tag, operator_code = tag.strip(), operator_code.strip()
    if operator_code and not is_valid_operator_code(operator_code):
        message = _("Fix the filters: the phone or the operator code is not valid.")
        return render(
            request,
            "error.html",
            {"user": user, "status_code": 422, "message": message},
            status_code=422,
        )
    return exports.clients_csv(
        request, settings, user.actor(request), operator_code or None, tag or None, None
    )


@router.get("/ui/clients/new", name="ui_client_new", response_class=HTMLResponse)
async def client_new(request: Request, user: UserDep) -> HTMLResponse:
    return _form(request, user, None, {"timezone": "Europe/Moscow"}, {})


@router.post("/ui/clients", name="ui_client_create", response_class=HTMLResponse)
async def client_create(
    request: Request, user: AdminUserDep, _csrf: CsrfDep, session: SessionDep
) -> Response:
    values, body = _read(await request.form())
    try:
        data = _validated(body)
        client = await service.create_client(session, data, actor=user.actor(request))
    except ValidationError as exc:
        return _form(request, user, None, values, field_errors(exc), 422)
    except ApiError as exc:
        return _form(request, user, None, values, {"phone": exc.detail}, exc.status_code)
    # To the new client's own page: its phone stays out of the URL.
    return see_other(
        request.url_for("ui_client", client_id=client.id).path,
        notice="normalized" if data.phone != values["phone"] else "created",
    )


@router.get("/ui/clients/{client_id}", name="ui_client", response_class=HTMLResponse)
async def client_page(
    request: Request, client_id: ResourceId, user: UserDep, session: SessionDep
) -> HTMLResponse:
    return _form(request, user, await service.get_client(session, client_id), {}, {})


@router.post("/ui/clients/{client_id}", name="ui_client_save", response_class=HTMLResponse)
async def client_save(
    request: Request,
    client_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
) -> Response:
    client = await service.get_client(session, client_id)
    values, body = _read(await request.form())
    try:
        data = _validated(body)
        await service.replace_client(session, client_id, data, actor=user.actor(request))
    except ValidationError as exc:
        return _form(request, user, client, values, field_errors(exc), 422)
    except ApiError as exc:
        await session.rollback()
        client = await service.get_client(session, client_id)
        return _form(request, user, client, values, {"phone": exc.detail}, exc.status_code)
    return see_other(
        request.url_for("ui_client", client_id=client_id).path,
        notice="normalized" if data.phone != values["phone"] else "saved",
    )


@router.post("/ui/clients/{client_id}/delete", name="ui_client_delete")
async def client_delete(
    request: Request,
    client_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
) -> Response:
    await service.delete_client(session, client_id, actor=user.actor(request))
    return see_other(request.url_for("ui_clients").path, notice="deleted")
