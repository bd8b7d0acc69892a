"""A mailing's test sends in the console: the "Send test" form and the tests' live status.

The form calls `services.api.mailings.test_send.send_test`, the REST API's own function, so
the rules (cancelled mailing, opted-out phone, TEST_SENDS_PER_MINUTE, audit entry) are the
same. The list refreshes itself every second while a test is still open.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from services.api.deps import EventsDep, SessionDep, SettingsDep
from services.api.errors import ApiError
from services.api.mailings.test_send import TestSendIn, recent_tests, send_test
from services.api.pagination import ResourceId
from services.api.ui.deps import AdminUserDep, CsrfDep, LiveUserDep
from services.api.ui.pages.common import field_errors, form_text, see_other
from services.api.ui.templating import render
from shared.domain.statuses import MESSAGE_TERMINAL_STATUSES

router = APIRouter(include_in_schema=False)

SHOWN = 10


async def tests_context(session: Any, mailing_id: int) -> dict[str, Any]:
    """What `partials/test_sends.html` shows: the newest tests, and whether any is open."""
    tests = await recent_tests(session, mailing_id, limit=SHOWN)
    return {
        "tests": tests,
        "tests_open": any(t.status not in MESSAGE_TERMINAL_STATUSES for t in tests),
    }


@router.get("/ui/mailings/{mailing_id}/tests", name="ui_mailing_tests", response_class=HTMLResponse)
async def mailing_tests(
    request: Request, mailing_id: ResourceId, user: LiveUserDep, session: SessionDep
) -> HTMLResponse:
    """The list of tests alone, for its refresh."""
    context = await tests_context(session, mailing_id)
    return render(
        request,
        "partials/test_sends_list.html",
        {"user": user, "mailing_id": mailing_id, **context},
    )


@router.post("/ui/mailings/{mailing_id}/test", name="ui_mailing_test")
async def mailing_test(
    request: Request,
    mailing_id: ResourceId,
    user: AdminUserDep,
    _csrf: CsrfDep,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
) -> Response:
    try:
        phone = TestSendIn(phone=form_text(await request.form(), "phone")).phone
        await send_test(
            session,
            mailing_id,
            phone,
            actor=user.actor(request),
            per_minute=settings.test_sends_per_minute,
        )
    except ValidationError as exc:
        return _refused(request, user, 422, field_errors(exc).get("phone", str(exc)))
    except ApiError as exc:
        return _refused(request, user, exc.status_code, exc.detail, exc.headers)
    await events.mailing_changed("test", mailing_id)
    page = request.url_for("ui_mailing", mailing_id=mailing_id).path
    return see_other(page, notice="test_sent")


def _refused(
    request: Request,
    user: Any,
    status_code: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    response = render(
        request,
        "error.html",
        {"user": user, "status_code": status_code, "message": message},
        status_code=status_code,
    )
    response.headers.update(headers or {})
    return response
