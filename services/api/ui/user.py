"""Who is signed in to the console, and why a request of theirs is refused: the types the
session store, the sign-in re-check and the request dependencies (`deps`) share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import Request

from services.api.principal import Actor, Role
from shared.settings import ApiSettings


def utcnow() -> datetime:
    return datetime.now(UTC)


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    session_id: str  # the session row's id (a hash of the cookie, never the cookie itself)
    subject: str  # the provider's `sub`
    login: str
    name: str
    email: str
    role: Role
    csrf_token: str
    groups_checked_at: datetime | None = None  # when the provider last said the groups

    @property
    def may_change(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def shown_name(self) -> str:
        return self.name or self.login or self.email

    def actor(self, request: Request) -> Actor:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        return Actor(
            name=self.login,
            role=self.role,
            kind="user",
            request_id=request_id,
            source=request.client.host if request.client else None,
            subject=self.subject,
            issuer=settings_of(request).oidc_issuer,
        )


class SsoNotConfigured(Exception):
    """OIDC_ISSUER (or OIDC_CLIENT_ID) is not set: the console cannot sign anyone in."""


class NotSignedIn(Exception):
    """No live session: answered by sending the browser to sign in (a polled fragment is told
    the session ended instead: following its redirect would sign in again without a person)."""

    def __init__(self, *, polled: bool = False) -> None:
        super().__init__()
        self.polled = polled


class NotAllowed(Exception):
    """Signed in, but the request is refused (a viewer's change, a forged or cross-site POST)."""

    def __init__(self, reason: str, user: ConsoleUser | None = None) -> None:
        super().__init__(reason)
        self.reason = reason  # "viewer" | "csrf" | "origin"
        self.user = user
