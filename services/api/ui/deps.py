"""Who is signed in to the console, and the checks every console route uses.

- `UserDep`: the signed-in user; without a live session the browser is sent to sign in and
  then back to the page it asked for. A person's request keeps the session from going idle.
- `LiveUserDep`: the same for what a page asks by itself (live fragments polled by htmx, the
  chart's data): it never keeps the session alive, and once the session has ended it says
  so in place instead of sending the tab to sign in again.
- `AdminUserDep`: the same, and only an admin (a viewer gets the 403 page).
- `CsrfDep`: on every state-changing route: the session's CSRF token (form field
  `csrf_token` or header `X-CSRF-Token`) and an Origin (or Referer) of the console itself.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from services.api.ui.auth import store
from services.api.ui.auth.recheck import still_vouched
from services.api.ui.user import (
    ConsoleUser,
    NotAllowed,
    NotSignedIn,
    SsoNotConfigured,
    settings_of,
    utcnow,
)

SESSION_COOKIE = "mailing_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _signed_in(request: Request, *, by_person: bool) -> ConsoleUser:
    settings = settings_of(request)
    if not settings.sso_configured:
        raise SsoNotConfigured
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NotSignedIn(polled=not by_person)
    async with request.app.state.session_factory() as db:
        user = await store.load(
            db, token, now=utcnow(), idle_s=settings.ui_session_idle_s, touch=by_person
        )
        await db.commit()
    if user is None:
        raise NotSignedIn(polled=not by_person)
    if by_person:
        if not await still_vouched(request, token, user):
            raise NotSignedIn
    request.state.user = user
    return user


async def current_user(request: Request) -> ConsoleUser:
    return await _signed_in(request, by_person=True)


async def current_user_polled(request: Request) -> ConsoleUser:
    return await _signed_in(request, by_person=False)


async def current_admin(user: Annotated[ConsoleUser, Depends(current_user)]) -> ConsoleUser:
    if not user.may_change:
        raise NotAllowed("viewer", user)
    return user


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, base_url: str) -> bool:
    """The request comes from a page of the console: its Origin, or else its Referer."""
    expected = origin_of(base_url)
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == expected
    referer = request.headers.get("referer")
    return referer is not None and origin_of(referer) == expected


def check_csrf(request: Request, user: ConsoleUser, presented: str | None) -> None:
    """The request comes from the console's own page and carries this session's token."""
    if not same_origin(request, settings_of(request).ui_base_url):
        raise NotAllowed("origin", user)
    if not presented or not hmac.compare_digest(presented.encode(), user.csrf_token.encode()):
        raise NotAllowed("csrf", user)


async def verify_csrf(
    request: Request, user: Annotated[ConsoleUser, Depends(current_user)]
) -> ConsoleUser:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        # Starlette keeps the parsed form: the route's own Form(...) fields still read it.
        # (The import's upload, a file of any size, checks its token without this: imports.py.)
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    check_csrf(request, user, presented)
    return user


UserDep = Annotated[ConsoleUser, Depends(current_user)]
LiveUserDep = Annotated[ConsoleUser, Depends(current_user_polled)]
AdminUserDep = Annotated[ConsoleUser, Depends(current_admin)]
CsrfDep = Annotated[ConsoleUser, Depends(verify_csrf)]
