"""Sign-in, sign-out and one's own sessions: `/ui/auth/...`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import httpx
import structlog
from authlib.common.errors import AuthlibBaseError
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import audit
from services.api.auth_limit import AUTH_THROTTLED, failed_auth, source_address
from services.api.ui.auth import store
from services.api.ui.auth.oidc import Provider, SignInError, failure, role_for
from services.api.ui.deps import (
    SESSION_COOKIE,
    ConsoleUser,
    CsrfDep,
    NotAllowed,
    SsoNotConfigured,
    UserDep,
    settings_of,
    utcnow,
)
from services.api.ui.pages.common import safe_next
from services.api.ui.templating import render

log = structlog.get_logger("console")

router = APIRouter(prefix="/ui/auth", include_in_schema=False)

NEXT_KEY = "console_next"


def lifetimes(request: Request) -> store.Lifetimes:
    settings = settings_of(request)
    return store.Lifetimes(
        idle=timedelta(seconds=settings.ui_session_idle_s),
        absolute=timedelta(seconds=settings.ui_session_max_age_s),
    )


def provider(request: Request) -> Provider:
    found: Provider | None = request.app.state.console_provider
    if found is None:
        raise SsoNotConfigured
    return found


async def start_sign_in(request: Request, next_url: str | None) -> Response:
    """Sends the browser to the provider's sign-in, to come back to `next_url` afterwards."""
    request.session[NEXT_KEY] = safe_next(next_url)
    try:
        return await provider(request).authorize_redirect(request)
    except SsoNotConfigured:
        raise
    except Exception as exc:  # discovery failed: the provider is down or misconfigured
        log.warning("console sign-in: identity provider unreachable", error=type(exc).__name__)
        return render(request, "auth/provider_unreachable.html", {}, status_code=502)


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    settings = settings_of(request)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.ui_session_max_age_s,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=settings.ui_base_url.startswith("https://"),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=settings_of(request).ui_base_url.startswith("https://"),
    )


async def record_sign_in(db: AsyncSession, request: Request, user: ConsoleUser) -> None:
    """The one place a console sign-in happens, inside the transaction that creates the
    session: the audit log records it in that transaction."""
    await audit.record_sign_in(db, user.actor(request), email=user.email, role=user.role.value)
    log.info("console sign-in", login=user.login, role=user.role.value)


@router.get("/login", name="ui_login")
async def login(request: Request, next: str | None = None) -> Response:
    return await start_sign_in(request, next)


@router.get("/callback", name="ui_auth_callback")
async def callback(request: Request) -> Response:
    """Where the provider sends the browser back with the authorization code."""
    client = provider(request)
    limiter, address = failed_auth(request), source_address(request)
    if (wait := limiter.retry_after_s(address)) is not None:
        AUTH_THROTTLED.labels("sign_in").inc()
        throttled = render(request, "auth/sign_in_failed.html", {}, status_code=429)
        throttled.headers["Retry-After"] = str(wait)
        return throttled
    try:
        signed_in = await client.finish(request)
    except httpx.HTTPError as exc:  # the provider's token or userinfo endpoint did not answer
        log.warning("console sign-in: identity provider unreachable", error=type(exc).__name__)
        request.session.pop(NEXT_KEY, None)
        return render(request, "auth/provider_unreachable.html", {}, status_code=502)
    except (AuthlibBaseError, JoseError, SignInError, KeyError, ValueError) as exc:
        # A stale or replayed callback (state unknown), a refused sign-in, a bad ID token
        # (signature, issuer, audience, nonce, expiry). The reason names a claim or an
        # OAuth error code, never a token.
        log.warning("console sign-in failed", error=type(exc).__name__, reason=failure(exc))
        limiter.failed(address, "sign_in")
        request.session.pop(NEXT_KEY, None)
        return render(request, "auth/sign_in_failed.html", {}, status_code=400)
    identity, groups = signed_in.identity, signed_in.groups
    settings = settings_of(request)
    role = role_for(groups, settings.oidc_admin_groups, settings.oidc_viewer_groups)
    next_url = safe_next(request.session.pop(NEXT_KEY, None))
    if role is None:
        log.info("console sign-in refused: in no console group", login=identity.login)
        return render(
            request,
            "auth/forbidden.html",
            {"reason": "no_group", "account": identity.email or identity.login},
            status_code=403,
        )
    now = utcnow()
    async with request.app.state.session_factory() as db:
        await store.delete_expired(db, now=now)
        token, user = await store.create(
            db,
            identity,
            role,
            id_token=signed_in.id_token,
            provider_tokens=signed_in.tokens,
            lifetimes=lifetimes(request),
            now=now,
            user_agent=request.headers.get("user-agent", ""),
            address=request.client.host if request.client else "",
        )
        await record_sign_in(db, request, user)
        await db.commit()
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(request, response, token)
    return response


async def _provider_logout(request: Request, id_token: str | None) -> Response:
    url = await provider(request).logout_url(id_token)
    response: Response = RedirectResponse(url or "/ui/auth/signed-out", status_code=303)
    clear_session_cookie(request, response)
    return response


@router.post("/logout", name="ui_logout")
async def logout(request: Request, user: CsrfDep) -> Response:
    """Ends this session here, then at the provider."""
    async with request.app.state.session_factory() as db:
        id_token = await store.id_token_of(db, user.session_id)
        await store.end(db, user.session_id, subject=user.subject)
        await db.commit()
    log.info("console sign-out", login=user.login)
    return await _provider_logout(request, id_token)


@router.get("/signed-out", name="ui_signed_out")
async def signed_out(request: Request) -> Response:
    return render(request, "auth/signed_out.html", {})


@router.get("/sessions", name="ui_sessions")
async def sessions(request: Request, user: UserDep) -> Response:
    async with request.app.state.session_factory() as db:
        rows = await store.of_subject(
            db, user.subject, now=utcnow(), idle_s=settings_of(request).ui_session_idle_s
        )
    return render(
        request, "auth/sessions.html", {"user": user, "sessions": rows, "section": "sessions"}
    )


@router.post("/sessions/end", name="ui_session_end")
async def end_session(
    request: Request, user: CsrfDep, session_id: Annotated[str, Form()]
) -> Response:
    """Ends one of one's other sessions (another browser or device)."""
    if session_id == user.session_id:
        return await logout(request, user)
    async with request.app.state.session_factory() as db:
        await store.end(db, session_id, subject=user.subject)
        await db.commit()
    return RedirectResponse("/ui/auth/sessions", status_code=303)


@router.post("/sessions/end-all", name="ui_sessions_end_all")
async def end_all_sessions(request: Request, user: CsrfDep) -> Response:
    """Sign out everywhere: every session of this account, then the provider's."""
    async with request.app.state.session_factory() as db:
        id_token = await store.id_token_of(db, user.session_id)
        ended = await store.end_all(db, user.subject)
        await db.commit()
    log.info("console sign-out everywhere", login=user.login, sessions=ended)
    return await _provider_logout(request, id_token)


__all__ = ["NotAllowed", "router", "safe_next", "start_sign_in"]
