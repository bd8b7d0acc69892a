"""Re-reading a signed-in account's groups at the identity provider.

A session's role came from the groups at sign-in; an account removed from the admin group
must lose admin within minutes, not when the session ends (12 h). Every UI_GROUPS_RECHECK_S
(300 s), on a person's request (never a polled fragment's), the console asks the provider
again with the token it kept sealed at sign-in (refresh token grant, or userinfo). The session
ends when the provider refuses (account disabled, grant revoked, token expired), names
another subject, or the groups now give another role (or none): the person signs in again and
gets the role the groups give now. A provider that does not answer delays the check by
RETRY_UNREACHABLE (the session keeps its role meanwhile).
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import structlog
from authlib.common.errors import AuthlibBaseError
from fastapi import Request
from joserfc.errors import JoseError
from sqlalchemy import update

from services.api.ui.auth import store
from services.api.ui.auth.oidc import Provider, SignInError, failure, role_for
from services.api.ui.user import ConsoleUser, settings_of, utcnow
from shared.models import ConsoleSession

log = structlog.get_logger("console")

RETRY_UNREACHABLE = timedelta(seconds=30)


async def still_vouched(request: Request, token: str, user: ConsoleUser) -> bool:
    """False when the session must end now (and it has been ended); True to go on."""
    settings = settings_of(request)
    every = timedelta(seconds=settings.ui_groups_recheck_s)
    now = utcnow()
    if user.groups_checked_at is not None and now - user.groups_checked_at < every:
        return True
    factory = request.app.state.session_factory
    async with factory() as db:
        sealed = await store.claim_recheck(db, user, now=now, due_before=now - every)
        await db.commit()
    if sealed is None:  # another request of this session is checking right now
        return True
    provider: Provider | None = request.app.state.console_provider
    tokens = store.unseal(token, sealed)
    if provider is None or not tokens:
        return await _end(request, user, "nothing to re-check the groups with")
    try:
        answer = await provider.recheck(tokens)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code >= 500:
            return await _retry_soon(request, user, every, exc)
        return await _end(request, user, failure(exc))
    except httpx.HTTPError as exc:
        return await _retry_soon(request, user, every, exc)
    except (AuthlibBaseError, JoseError, SignInError, KeyError, ValueError) as exc:
        return await _end(request, user, failure(exc))
    if answer.identity.subject != user.subject:
        return await _end(request, user, "the provider named another subject")
    role = role_for(answer.groups, settings.oidc_admin_groups, settings.oidc_viewer_groups)
    if role is not user.role:
        return await _end(
            request, user, f"the account's groups now give {role.value if role else 'no role'}"
        )
    async with factory() as db:
        await store.keep_provider_tokens(db, token, answer.tokens)
        await db.commit()
    return True


async def _end(request: Request, user: ConsoleUser, reason: str) -> bool:
    async with request.app.state.session_factory() as db:
        await store.end(db, user.session_id, subject=user.subject)
        await db.commit()
    log.info("console session ended at the groups re-check", login=user.login, reason=reason)
    return False


async def _retry_soon(
    request: Request, user: ConsoleUser, every: timedelta, exc: Exception
) -> bool:
    log.warning(
        "console groups re-check: identity provider unreachable",
        login=user.login,
        error=type(exc).__name__,
    )
    async with request.app.state.session_factory() as db:
        await db.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == user.session_id)
            .values(groups_checked_at=utcnow() - every + RETRY_UNREACHABLE)
        )
        await db.commit()
    return True
