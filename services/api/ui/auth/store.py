"""Console sessions in PostgreSQL. The cookie carries a random token; the row's id is its
SHA-256, so neither the table nor a log line holds anything that can be replayed. The
provider's refresh token is kept sealed with a key derived from the cookie's token too
(AES-GCM), so the table alone cannot use it either."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.principal import Role
from services.api.ui.user import ConsoleUser
from shared.models import ConsoleSession

# last_seen_at is written at most this often per session (not on every request or poll).
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in (from the ID token and, if needed, userinfo)."""

    subject: str
    login: str
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta

    def alive(self, *, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        return now < created_at + self.absolute and now < last_seen_at + self.idle


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sealing_key(token: str) -> bytes:
    return hashlib.sha256(b"console provider tokens\x00" + token.encode()).digest()


def seal(token: str, values: dict[str, str]) -> str | None:
    """The provider's tokens, readable only with the session's cookie token."""
    if not values:
        return None
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_sealing_key(token)).encrypt(
        nonce, json.dumps(values).encode(), session_id(token).encode()
    )
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(token: str, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    raw = base64.urlsafe_b64decode(sealed)
    try:
        opened = AESGCM(_sealing_key(token)).decrypt(raw[:12], raw[12:], session_id(token).encode())
    except InvalidTag:
        return {}
    values = json.loads(opened)
    return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}


def _user(row: ConsoleSession) -> ConsoleUser:
    return ConsoleUser(
        session_id=row.id,
        subject=row.subject,
        login=row.login,
        name=row.name,
        email=row.email,
        role=Role(row.role),
        csrf_token=row.csrf_token,
        groups_checked_at=row.groups_checked_at,
    )


async def create(
    db: AsyncSession,
    identity: Identity,
    role: Role,
    *,
    id_token: str | None,
    lifetimes: Lifetimes,
    now: datetime,
    user_agent: str = "",
    address: str = "",
    provider_tokens: dict[str, str] | None = None,
) -> tuple[str, ConsoleUser]:
    """A new session; returns the cookie's token and the user. The caller commits.
    `provider_tokens` (the refresh or access token) let the groups be re-checked later."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id=session_id(token),
        subject=identity.subject,
        login=identity.login,
        name=identity.name,
        email=identity.email,
        role=role.value,
        id_token=id_token,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetimes.absolute,
        user_agent=user_agent[:300],
        address=address,
        provider_tokens=seal(token, provider_tokens or {}),
        groups_checked_at=now,
    )
    await db.execute(
        insert(ConsoleSession).values(
            {c.name: getattr(row, c.key) for c in ConsoleSession.__table__.columns}
        )
    )
    return token, _user(row)


async def load(
    db: AsyncSession, token: str, *, now: datetime, idle_s: float, touch: bool = True
) -> ConsoleUser | None:
    """The session's user if it is alive (before its absolute end, not idle too long)."""
    row = await db.scalar(
        select(ConsoleSession).where(
            ConsoleSession.id == session_id(token),
            ConsoleSession.expires_at > now,
            ConsoleSession.last_seen_at > now - timedelta(seconds=idle_s),
        )
    )
    if row is None:
        return None
    if touch and now - row.last_seen_at >= TOUCH_EVERY:
        await db.execute(
            update(ConsoleSession).where(ConsoleSession.id == row.id).values(last_seen_at=now)
        )
    return _user(row)


async def claim_recheck(
    db: AsyncSession, user: ConsoleUser, *, now: datetime, due_before: datetime
) -> str | None:
    """Takes the session's due groups re-check (one request of the session does it, however
    many arrive at once: a refresh token may be spent only once); returns its sealed provider
    tokens, or None when the re-check is not due or another request has taken it. An empty
    string: due, but nothing to ask the provider with."""
    taken = (
        await db.execute(
            update(ConsoleSession)
            .where(
                ConsoleSession.id == user.session_id,
                (ConsoleSession.groups_checked_at.is_(None))
                | (ConsoleSession.groups_checked_at < due_before),
            )
            .values(groups_checked_at=now)
            .returning(ConsoleSession.provider_tokens)
        )
    ).first()
    return None if taken is None else (taken[0] or "")


async def keep_provider_tokens(db: AsyncSession, token: str, values: dict[str, str]) -> None:
    """After a re-check: the (possibly rotated) refresh token replaces the old one."""
    await db.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id(token))
        .values(provider_tokens=seal(token, values))
    )


async def id_token_of(db: AsyncSession, sid: str) -> str | None:
    return await db.scalar(select(ConsoleSession.id_token).where(ConsoleSession.id == sid))


async def of_subject(db: AsyncSession, subject: str, *, now: datetime, idle_s: float) -> list:
    """One's live sessions, newest first."""
    rows = await db.scalars(
        select(ConsoleSession)
        .where(
            ConsoleSession.subject == subject,
            ConsoleSession.expires_at > now,
            ConsoleSession.last_seen_at > now - timedelta(seconds=idle_s),
        )
        .order_by(ConsoleSession.created_at.desc())
    )
    return list(rows)


async def end(db: AsyncSession, sid: str, *, subject: str) -> bool:
    """Ends one of the subject's sessions (never someone else's)."""
    result = await db.execute(
        delete(ConsoleSession).where(ConsoleSession.id == sid, ConsoleSession.subject == subject)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def end_all(db: AsyncSession, subject: str) -> int:
    result = await db.execute(delete(ConsoleSession).where(ConsoleSession.subject == subject))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_expired(db: AsyncSession, *, now: datetime) -> int:
    """Removes sessions past their absolute end (done at each sign-in; idle ones are refused
    at once and removed when their absolute end comes)."""
    result = await db.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]
