from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.api.principal import Role
from shared.models import AuditEntry


class AuditActor(BaseModel):
    name: str = Field(examples=["ci-deploy"], description="The token's name or the user's login")
    kind: str = Field(examples=["token"], description="token or user")
    role: Role = Field(examples=["admin"])
    subject: str | None = Field(
        None,
        examples=["248289761001"],
        description="A console user's `sub` at the identity provider: who the user is (the "
        "login in `name` may change); null for tokens",
    )
    issuer: str | None = Field(
        None,
        examples=["https://sso.example.com/realms/staff"],
        description="The identity provider that vouched for `subject`; null for tokens",
    )


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (version-traceid-spanid-flags)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class AuditEntryOut(BaseModel):
    id: int
    at: datetime = Field(examples=["2026-12-01T21:50:03.120000Z"], description="ISO 8601")
    actor: AuditActor
    action: str = Field(examples=["update"])
    target_type: str = Field(examples=["mailing"])
    target_id: str | None = Field(examples=["42"])
    request_id: str | None = Field(
        examples=["5f0c3c7e8f8b4a0f9d3c2b1a09876543"],
        description="The X-Request-ID of the response that made the change",
    )
    trace_id: str | None = Field(
        examples=["4bf92f3577b34da6a3ce929d0e0e4736"],
        description="The trace of the request that made the change, when tracing was on "
        "(docs/TRACING.md): look it up in the tracing backend",
    )
    source: str | None = Field(examples=["10.0.3.7"], description="The client's address")
    changes: dict[str, Any] | None = Field(
        examples=[{"text": {"old": "Hello", "new": "Hello again"}}],
        description="The changed fields (old and new values where a value changed); "
        "never a secret; phones masked",
    )

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=AuditActor(
                name=entry.actor_name,
                kind=entry.actor_kind,
                role=Role(entry.actor_role),
                subject=entry.actor_subject,
                issuer=entry.actor_issuer,
            ),
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            request_id=entry.request_id,
            trace_id=_trace_id(entry.traceparent),
            source=entry.source,
            changes=entry.changes,
        )


class AuditPage(BaseModel):
    items: list[AuditEntryOut] = Field(description="Newest first")
    next_before_id: int | None = Field(
        description="Pass as `before_id` to get the next (older) page; null on the last page",
        examples=[None],
    )
