"""Write audit entries (in the caller's transaction), list them, prune old ones."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.principal import Actor
from shared import tracing
from shared.domain.clients import mask_phone
from shared.logging import SECRET_KEYS
from shared.models import AuditEntry

# Keys whose values never reach the audit log, at any depth of `changes`.
SECRET_FIELDS = SECRET_KEYS | {"secret", "client_secret", "api_token", "session_id", "csrf"}
PHONE_FIELDS = frozenset({"phone", "phones"})


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def clean_changes(changes: Any) -> Any:
    """The changes as JSON, secrets dropped and phones masked wherever they appear."""
    if isinstance(changes, Mapping):
        cleaned = {}
        for key, value in changes.items():
            if str(key).lower() in SECRET_FIELDS:
                cleaned[str(key)] = "***"
            elif str(key).lower() in PHONE_FIELDS:
                cleaned[str(key)] = _masked(to_jsonable_python(value))
            else:
                cleaned[str(key)] = clean_changes(value)
        return cleaned
    if isinstance(changes, list | tuple):
        return [clean_changes(item) for item in changes]
    return to_jsonable_python(changes)


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | int | None,
    changes: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to the session, uncommitted: it lands (or not) with the change."""
    session.add(
        AuditEntry(
            actor_name=actor.name,
            actor_kind=actor.kind,
            actor_role=actor.role.value,
            actor_subject=actor.subject,
            actor_issuer=actor.issuer,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            request_id=actor.request_id,
            traceparent=tracing.inject_current().get("traceparent"),
            source=actor.source,
            changes=clean_changes(changes) if changes is not None else None,
        )
    )


async def record_sign_in(session: AsyncSession, actor: Actor, **details: Any) -> None:
    """A console sign-in (details such as the groups the role came from; no tokens). The
    caller commits, e.g. with the session row it creates."""
    await record(session, actor, "sign_in", "user", actor.name, details or None)


async def list_entries(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """Newest first; keyset-paginated by id (`before_id`)."""
    query = select(AuditEntry)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if actor is not None:
        query = query.where(AuditEntry.actor_name == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    return list(await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))


async def prune(session: AsyncSession, *, retention_days: int, now: datetime) -> int:
    """Delete entries older than the retention, committing; returns how many went."""
    result = await session.execute(
        delete(AuditEntry).where(AuditEntry.at < now - timedelta(days=retention_days))
    )
    await session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
