"""Mailings: the list, one mailing live, create and edit, pause, resume, delete.

Every change goes through `services.api.mailings.service`, the REST API's own functions, so
the rules, the 409s and the wake-up events are the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import exports
from services.api.deps import EventsDep, SessionDep, SettingsDep
from services.api.errors import ApiError
from services.api.events import EventPublisher
from services.api.mailings import check, delivery, resend, service, stats
from services.api.mailings.schemas import (
    MailingCheckIn,
    MailingClone,
    MailingCreate,
    MailingFilter,
    MailingPatch,
)
from services.api.pagination import ResourceId
from services.api.ui.deps import AdminUserDep, ConsoleUser, CsrfDep, LiveUserDep, UserDep
from services.api.ui.pages import test_sends
from services.api.ui.pages.common import field_errors, form_text, see_other, split_list
from services.api.ui.pages.dashboard import progress_of
from services.api.ui.templating import (
    TZ_COOKIE,
    admin_timezone,
    gettext_for,
    render,
    timezone_names,
)
from shared.domain.statuses import MAILING_FINAL_STATUSES, MailingStatus, MessageStatus
from shared.domain.text import segment_text
from shared.domain.waiting import Wait, WaitReason, message_wait
from shared.models import Client, Mailing, MessageMinute

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
FIELD_OF = {"start_at": "start_at", "end_at": "end_at", "text": "text", "filter": "filter"}


def _status(value: str | None) -> MailingStatus | None:
    return MailingStatus(value) if value in set(MailingStatus) else None


@router.get("/ui/mailings", name="ui_mailings", response_class=HTMLResponse)
async def mailings_list(
    request: Request,
    user: UserDep,
    session: SessionDep,
    status: str | None = None,
    q: str = Query("", max_length=200),
    order: str = "newest",
    cursor: int | None = Query(None, ge=1, le=2**63 - 1),
) -> HTMLResponse:
    newest = order != "oldest"
    rows = await service.list_mailings(
        session,
        limit=PAGE_SIZE,
        after_id=0 if newest else (cursor or 0),
        before_id=(cursor or 2**63 - 1) if newest else None,
        status=_status(status),
        search=q.strip() or None,
    )
    counts = await stats.counts_by_mailing(session, [m.id for m in rows])
    items = [{"mailing": m, **progress_of(counts[m.id])} for m in rows]
    next_cursor = rows[-1].id if len(rows) == PAGE_SIZE else None
    return render(
        request,
        "mailings.html",
        {
            "user": user,
            "section": "mailings",
            "items": items,
            "statuses": list(MailingStatus),
            "status": _status(status),
            "q": q,
            "order": "newest" if newest else "oldest",
            "next_cursor": next_cursor,
            "first_page": cursor is None,
        },
    )


async def current_rate(session: Any, mailing: Mailing, now: datetime) -> float:
    """Messages finished per second over the last minute or two (from message_minute)."""
    if mailing.status != MailingStatus.RUNNING or mailing.started_at is None:
        return 0.0
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    finished = await session.scalar(
        select(func.coalesce(func.sum(MessageMinute.count), 0)).where(
            MessageMinute.mailing_id == mailing.id,
            MessageMinute.minute >= since,
            MessageMinute.status.in_(("sent", "failed", "expired")),
        )
    )
    seconds = (now - max(since, mailing.started_at)).total_seconds()
    return float(finished or 0) / seconds if seconds > 0 else 0.0


async def _detail_context(
    request: Request,
    session: Any,
    mailing_id: int,
    msg_status: str | None,
    msg_after: int,
    *,
    delivery_groups: bool = True,
) -> dict[str, Any]:
    mailing = await service.get_mailing(session, mailing_id)
    detail = await stats.mailing_stats(session, mailing_id, delivery_groups=delivery_groups)
    counts = {str(k): v for k, v in detail.counts.items()}
    progress = progress_of(counts)
    now = datetime.now(UTC)
    rate = await current_rate(session, mailing, now)
    remaining = progress["total"] - progress["done"]
    eta = remaining / rate if rate > 0 and mailing.status == MailingStatus.RUNNING else None
    # Nothing due now and the rest held by a closed send window: the last minute's rate says
    # nothing about when it ends; the page says when the window opens instead.
    reasons = {wait.reason for wait in detail.waiting}
    window_wait = next((w for w in detail.waiting if w.reason == WaitReason.SEND_WINDOW), None)
    if window_wait is not None and not reasons & {WaitReason.IN_LINE, WaitReason.SENDING}:
        eta = None
    else:
        window_wait = None
    return {
        "mailing": mailing,
        "detail": detail,
        "counts": counts,
        "progress": progress,
        "rate": rate,
        "eta_s": eta,
        "window_wait": window_wait,
        "live": mailing.status in (MailingStatus.RUNNING, MailingStatus.SCHEDULED),
        "message_statuses": list(MessageStatus),
        "msg_status": msg_status,
        "msg_after": msg_after,
    }


async def _messages(
    session: Any, mailing: Mailing, msg_status: str | None, msg_after: int
) -> tuple[list[dict[str, Any]], int | None]:
    status = msg_status if msg_status in MessageStatus.__members__.values() else None
    messages = await service.list_messages(
        session, mailing.id, status=status, limit=PAGE_SIZE, after_id=msg_after
    )
    clients = {
        c.id: c
        for c in await session.scalars(
            select(Client).where(Client.id.in_([m.client_id for m in messages]))
        )
    }
    window = stats.send_window_of(mailing)
    now = datetime.now(UTC)
    rows = []
    for message in messages:
        client = clients.get(message.client_id)
        wait = message_wait(
            status=MessageStatus(message.status),
            not_before=message.not_before,
            attempts=message.attempts,
            mailing_status=MailingStatus(mailing.status),
            start_at=mailing.start_at,
            window=window,
            client_timezone=client.timezone if client else "UTC",
            now=now,
        )
        rows.append(
            {"message": message, "client": client, "wait": wait, "next_try": _next_try(wait)}
        )
    return rows, (messages[-1].id if len(messages) == PAGE_SIZE else None)


def _next_try(wait: Wait | None) -> datetime | str | None:
    """When a waiting message is tried next: "now" when due, the end of its wait (the window
    opening, the retry, the mailing's start) when known, else None (paused, being sent)."""
    if wait is None:
        return None
    if wait.reason is WaitReason.IN_LINE:
        return "now"
    return wait.until


@router.get("/ui/mailings/new", name="ui_mailing_new", response_class=HTMLResponse)
async def mailing_new(request: Request, user: UserDep) -> HTMLResponse:
    return _form(request, user, None, {}, {})


@router.get("/ui/mailings/{mailing_id}", name="ui_mailing", response_class=HTMLResponse)
async def mailing_page(
    request: Request,
    mailing_id: ResourceId,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    msg_status: str | None = None,
    msg_after: int = Query(0, ge=0, le=2**63 - 1),
    reply_after: int = Query(0, ge=0, le=2**63 - 1),
) -> HTMLResponse:
    context = await _detail_context(request, session, mailing_id, msg_status, msg_after)
    replies = await delivery.list_replies(
        session, mailing_id, limit=PAGE_SIZE, after_id=reply_after
    )
    if context["mailing"].status == MailingStatus.AWAITING_APPROVAL:
        context["check"] = await check.presend_check(
            session,
            check.Draft.of(context["mailing"]),
            threshold=settings.approval_threshold,
            frequency_cap=settings.frequency_cap,
        )
    messages, next_after = await _messages(session, context["mailing"], msg_status, msg_after)
    return render(
        request,
        "mailing.html",
        {
            "user": user,
            "section": "mailings",
            **context,
            "messages": messages,
            "next_msg_after": next_after,
            "replies": replies,
            "reply_after": reply_after,
            "next_reply_after": replies[-1].id if len(replies) == PAGE_SIZE else None,
            **await test_sends.tests_context(session, mailing_id),
            "clone_tz": admin_timezone(request),
            "timezones": timezone_names(),
        },
    )


@router.get("/ui/mailings/{mailing_id}/live", name="ui_mailing_live", response_class=HTMLResponse)
async def mailing_live(
    request: Request, mailing_id: ResourceId, user: LiveUserDep, session: SessionDep
) -> HTMLResponse:
    """The live part of a mailing's page; it stops asking for itself once nothing runs."""
    context = await _detail_context(request, session, mailing_id, None, 0, delivery_groups=False)
    return render(request, "partials/mailing_live.html", {"user": user, **context})


@router.get("/ui/mailings-preview", name="ui_mailing_preview", response_class=HTMLResponse)
async def mailing_preview(
    request: Request,
    user: UserDep,
    session: SessionDep,
    operator_codes: str = Query("", max_length=2000),
    tags: str = Query("", max_length=2000),
) -> HTMLResponse:
    """How many clients the filter matches now (the REST preview's own service function)."""
    try:
        chosen = MailingFilter(operator_codes=split_list(operator_codes), tags=split_list(tags))
    except ValidationError as exc:
        error = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        return render(request, "partials/preview.html", {"user": user, "error": error})
    count = await service.count_matching_clients(session, chosen)
    return render(request, "partials/preview.html", {"user": user, "count": count})


@router.get("/ui/mailings-check", name="ui_mailing_check", response_class=HTMLResponse)
async def mailing_check(
    request: Request,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    mailing_id: int | None = Query(None, ge=1, le=2**63 - 1),
) -> HTMLResponse:
    """The pre-send check of the form as it stands (the REST check's own function). Fields
    left out or not yet valid leave their part out; a started mailing's fixed fields (disabled
    in the form, so not sent) are its own."""
    _ = gettext_for(request)
    query = request.query_params
    values = {name: query.get(name, "").strip()[:5000] for name in CHECK_FIELDS}
    body, errors = _body(values, _)
    body = {name: value for name, value in body.items() if name not in errors}
    if not body["text"]:
        body.pop("text")
    if mailing_id is not None:
        mailing = await service.get_mailing(session, mailing_id)
        if mailing.started_at is not None:
            draft = check.Draft.of(mailing)
            body["filter"] = draft.filter.model_dump()
            body["start_at"] = mailing.start_at
            body["send_window"] = _window_body(mailing)
            body["transactional"] = mailing.transactional
    try:
        data = MailingCheckIn.model_validate(body)
    except ValidationError as exc:
        error = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        return render(request, "partials/check.html", {"user": user, "check_error": error})
    draft = check.Draft(
        filter=data.filter,
        text=data.text,
        start_at=data.start_at,
        end_at=data.end_at,
        window=data.send_window.window() if data.send_window else None,
        transactional=data.transactional,
        frequency_cap=data.frequency_cap,
    )
    result = await check.presend_check(
        session, draft, threshold=settings.approval_threshold, frequency_cap=settings.frequency_cap
    )
    return render(request, "partials/check.html", {"user": user, "check": result})


CHECK_FIELDS = (
    "text",
    "start_at",
    "end_at",
    "tz",
    "operator_codes",
    "tags",
    "window_start",
    "window_end",
    "transactional",
    "frequency_cap",
)


def _window_body(mailing: Mailing) -> dict[str, str] | None:
    if mailing.send_window_start is None or mailing.send_window_end is None:
        return None
    return {
        "start": mailing.send_window_start.strftime("%H:%M"),
        "end": mailing.send_window_end.strftime("%H:%M"),
    }


@router.get("/ui/text-info", name="ui_text_info", response_class=HTMLResponse)
async def text_info(
    request: Request, user: UserDep, text: str = Query("", max_length=5000)
) -> HTMLResponse:
    return render(request, "partials/text_info.html", {"user": user, "seg": segment_text(text)})


def _form(
    request: Request,
    user: Any,
    mailing: Mailing | None,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    tz = values.get("tz") or admin_timezone(request)
    if mailing is not None and not values:
        zone = ZoneInfo(tz)
        values = {
            "text": mailing.text,
            "start_at": mailing.start_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M"),
            "end_at": mailing.end_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M"),
            "operator_codes": " ".join(mailing.filter_operator_codes),
            "tags": " ".join(mailing.filter_tags),
            "window_start": mailing.send_window_start.strftime("%H:%M")
            if mailing.send_window_start
            else "",
            "window_end": mailing.send_window_end.strftime("%H:%M")
            if mailing.send_window_end
            else "",
            "transactional": "on" if mailing.transactional else "",
            "frequency_cap": mailing.frequency_cap or "",
        }
    started = mailing is not None and mailing.started_at is not None
    if mailing is None:
        # One key per form shown: a second press of Create (a double click, a resend) finds the
        # mailing the first made instead of making another that sends too.
        values = {**values, "form_key": values.get("form_key") or secrets.token_urlsafe(16)}
    response = render(
        request,
        "mailing_form.html",
        {
            "user": user,
            "section": "mailings",
            "mailing": mailing,
            "values": values,
            "errors": errors,
            "tz_value": tz,
            "timezones": timezone_names(),
            "started": started,
            "finished": mailing is not None and mailing.status in MAILING_FINAL_STATUSES,
            "seg": segment_text(values.get("text", "")),
            "global_cap": request.app.state.settings.frequency_cap,
        },
        status_code=status_code,
    )
    # Back after a create shows a fresh form (and key), not the sent one from the cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def _read_form(form: Any) -> dict[str, str]:
    names = ("text", "start_at", "end_at", "tz", "operator_codes", "tags")
    values = {name: form_text(form, name) for name in names}
    values["window_start"] = form_text(form, "window_start")
    values["window_end"] = form_text(form, "window_end")
    values["form_key"] = form_text(form, "form_key")
    values["transactional"] = "on" if form_text(form, "transactional") == "on" else ""
    values["frequency_cap"] = form_text(form, "frequency_cap")
    return values


def _moment(value: str, tz: str, field: str, errors: dict[str, str], _: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(tz))
    except (ValueError, KeyError):
        errors[field] = _("Enter a date and time.")
        return None


def _body(values: dict[str, str], _: Any) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    tz = values["tz"] if values["tz"] in timezone_names() else "UTC"
    body: dict[str, Any] = {
        "text": values["text"],
        "start_at": _moment(values["start_at"], tz, "start_at", errors, _),
        "end_at": _moment(values["end_at"], tz, "end_at", errors, _),
        "filter": {
            "operator_codes": split_list(values["operator_codes"]),
            "tags": split_list(values["tags"]),
        },
        "send_window": {"start": values["window_start"], "end": values["window_end"]}
        if values["window_start"] or values["window_end"]
        else None,
        "transactional": values.get("transactional") == "on",
        "frequency_cap": values.get("frequency_cap") or None,
    }
    return body, errors


def _validation_errors(exc: ValidationError) -> dict[str, str]:
    errors = field_errors(exc)
    if "filter" in errors:
        errors["operator_codes"] = errors.pop("filter")
    if "send_window" in errors:
        errors["window_start"] = errors.pop("send_window")
    return errors


def _remember_tz(response: Response, tz: str) -> Response:
    if tz in timezone_names():
        response.set_cookie(TZ_COOKIE, tz, max_age=365 * 24 * 3600, path="/ui", samesite="lax")
    return response


@router.post("/ui/mailings", name="ui_mailing_create", response_class=HTMLResponse)
async def mailing_create(
    request: Request,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    _ = gettext_for(request)
    values = _read_form(await request.form())
    body, errors = _body(values, _)
    if errors:
        return _form(request, user, None, values, errors, 422)
    try:
        data = MailingCreate.model_validate(body)
        key = f"console:{user.subject}:{values['form_key']}" if values["form_key"] else None
        mailing, replayed, _check = await service.create_mailing(
            session,
            data,
            key,
            actor=user.actor(request),
            approval_threshold=settings.approval_threshold,
            frequency_cap=settings.frequency_cap,
        )
    except ValidationError as exc:
        return _form(request, user, None, values, _validation_errors(exc), 422)
    except ApiError as exc:
        return _form(request, user, None, values, {"form": exc.detail}, exc.status_code)
    if not replayed:
        await events.mailing_changed("created", mailing.id)
    url = str(request.url_for("ui_mailing", mailing_id=mailing.id).path)
    return _remember_tz(see_other(url, notice="created"), values["tz"])


@router.get("/ui/mailings/{mailing_id}/edit", name="ui_mailing_edit", response_class=HTMLResponse)
async def mailing_edit(
    request: Request, mailing_id: ResourceId, user: UserDep, session: SessionDep
) -> HTMLResponse:
    return _form(request, user, await service.get_mailing(session, mailing_id), {}, {})


@router.post("/ui/mailings/{mailing_id}/edit", name="ui_mailing_save", response_class=HTMLResponse)
async def mailing_save(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    _ = gettext_for(request)
    mailing = await service.get_mailing(session, mailing_id)
    values = _read_form(await request.form())
    body, errors = _body(values, _)
    if mailing.started_at is not None:
        # Fixed once started: send only what may still change (the form disables the rest).
        body = {
            "text": body["text"],
            "end_at": body["end_at"],
            "frequency_cap": body["frequency_cap"],
        }
        errors = {name: msg for name, msg in errors.items() if name in body}
    if errors:
        return _form(request, user, mailing, values, errors, 422)
    try:
        patch = MailingPatch.model_validate(body)
        mailing, _check = await service.patch_mailing(
            session,
            mailing_id,
            patch,
            actor=user.actor(request),
            approval_threshold=settings.approval_threshold,
            frequency_cap=settings.frequency_cap,
        )
    except ValidationError as exc:
        return _form(request, user, mailing, values, _validation_errors(exc), 422)
    except ApiError as exc:
        await session.rollback()
        mailing = await service.get_mailing(session, mailing_id)
        return _form(request, user, mailing, values, {"form": exc.detail}, exc.status_code)
    await events.mailing_changed("updated", mailing.id)
    url = str(request.url_for("ui_mailing", mailing_id=mailing.id).path)
    return _remember_tz(see_other(url, notice="saved"), values["tz"])


async def _action_failed(request: Request, user: Any, exc: ApiError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"user": user, "status_code": exc.status_code, "message": exc.detail},
        status_code=exc.status_code,
    )


Control = Callable[..., Awaitable[Mailing]]


async def _control(
    request: Request,
    mailing_id: int,
    user: ConsoleUser,
    session: AsyncSession,
    events: EventPublisher,
    move: Control,
    notice: str,
) -> Response:
    """Pause, resume or cancel (the REST API's own move): its 409 shown as a page, else back to
    the mailing with a notice, the scheduler told."""
    try:
        await move(session, mailing_id, actor=user.actor(request))
    except ApiError as exc:
        return await _action_failed(request, user, exc)
    await events.mailing_changed("updated", mailing_id)
    return see_other(request.url_for("ui_mailing", mailing_id=mailing_id).path, notice=notice)


@router.post("/ui/mailings/{mailing_id}/pause", name="ui_mailing_pause")
async def mailing_pause(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    return await _control(
        request, mailing_id, user, session, events, service.pause_mailing, "paused"
    )


@router.post("/ui/mailings/{mailing_id}/resume", name="ui_mailing_resume")
async def mailing_resume(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    return await _control(
        request, mailing_id, user, session, events, service.resume_mailing, "resumed"
    )


@router.post("/ui/mailings/{mailing_id}/approve", name="ui_mailing_approve")
async def mailing_approve(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    """The REST approve: another admin than the creator lets a large mailing start."""
    return await _control(
        request, mailing_id, user, session, events, service.approve_mailing, "approved"
    )


@router.post("/ui/mailings/{mailing_id}/delete", name="ui_mailing_delete")
async def mailing_delete(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    """Deleting a running mailing asks for its id to be typed (a field `confirm_id`)."""
    _ = gettext_for(request)
    mailing = await service.get_mailing(session, mailing_id)
    if mailing.status == MailingStatus.RUNNING:
        typed = form_text(await request.form(), "confirm_id")
        if typed != str(mailing_id):
            message = _(
                "Type the mailing's id (%(id)s) to delete a running mailing.", id=mailing_id
            )
            return await _action_failed(request, user, ApiError(422, message))
    await session.rollback()
    try:
        await service.delete_mailing(session, mailing_id, actor=user.actor(request))
    except ApiError as exc:
        return await _action_failed(request, user, exc)
    await events.mailing_changed("deleted", mailing_id)
    return see_other(request.url_for("ui_mailings").path, notice="deleted")


@router.post("/ui/mailings/{mailing_id}/cancel", name="ui_mailing_cancel")
async def mailing_cancel(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    """Stop for good (the REST cancel): it stays visible with its statistics."""
    return await _control(
        request, mailing_id, user, session, events, service.cancel_mailing, "cancelled"
    )


@router.post("/ui/mailings/{mailing_id}/retry-failed", name="ui_mailing_retry_failed")
async def mailing_retry_failed(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    events: EventsDep,
) -> Response:
    """The REST retry-failed: the notice says how many messages became due again."""
    try:
        result = await resend.retry_failed(session, mailing_id, actor=user.actor(request))
    except ApiError as exc:
        return await _action_failed(request, user, exc)
    if result.retried:
        await events.mailing_changed("updated", mailing_id)
    return see_other(
        request.url_for("ui_mailing", mailing_id=mailing_id).path,
        notice="retried",
        count=result.retried,
    )


@router.post("/ui/mailings/{mailing_id}/clone", name="ui_mailing_clone")
async def mailing_clone(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    """A copy running from Start to End (the REST clone); on to the new mailing's page."""
    _ = gettext_for(request)
    form = await request.form()
    tz = form_text(form, "tz")
    tz = tz if tz in timezone_names() else "UTC"
    errors: dict[str, str] = {}
    start_at = _moment(form_text(form, "start_at"), tz, "start_at", errors, _)
    end_at = _moment(form_text(form, "end_at"), tz, "end_at", errors, _)
    try:
        if errors:
            raise ApiError(422, "; ".join(sorted(set(errors.values()))))
        data = MailingClone.model_validate({"start_at": start_at, "end_at": end_at})
        clone = await service.clone_mailing(
            session,
            mailing_id,
            data,
            actor=user.actor(request),
            approval_threshold=settings.approval_threshold,
            frequency_cap=settings.frequency_cap,
        )
    except ValidationError as exc:
        message = "; ".join(field_errors(exc).values())
        return await _action_failed(request, user, ApiError(422, message))
    except ApiError as exc:
        return await _action_failed(request, user, exc)
    await events.mailing_changed("created", clone.id)
    url = str(request.url_for("ui_mailing", mailing_id=clone.id).path)
    return _remember_tz(see_other(url, notice="cloned"), tz)


@router.get("/ui/mailings/{mailing_id}/messages.csv", name="ui_mailing_messages_export")
async def mailing_messages_export(
    request: Request,
    mailing_id: ResourceId,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    msg_status: str | None = None,
) -> Response:
    """The mailing's messages as CSV: the REST export's own stream (of one status if given)."""
    status = MessageStatus(msg_status) if msg_status in set(MessageStatus) else None
    return await exports.export_messages(
        mailing_id, request, session, settings, user.actor(request), status
    )
