from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime

from services.api.audit import service
from services.api.audit.schemas import AuditEntryOut, AuditPage
from services.api.deps import SessionDep
from services.api.openapi import api_router
from services.api.pagination import Limit

router = api_router(prefix="/audit", tags=["audit"])


def _text(description: str, example: str) -> object:
    return Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",
        description=description,
        examples=[example],
    )


@router.get("", response_model=AuditPage)
async def list_audit_entries(
    session: SessionDep,
    limit: Limit = 100,
    before_id: Annotated[
        int | None,
        Query(ge=1, le=2**63 - 1, description="Return entries with an id below this (keyset)"),
    ] = None,
    actor: Annotated[str | None, _text("Token name or user login", "token-1")] = None,
    action: Annotated[str | None, _text("create, update, delete, sign_in, ...", "delete")] = None,
    target_type: Annotated[str | None, _text("client, mailing, import, ...", "mailing")] = None,
    target_id: Annotated[str | None, _text("The target's id", "42")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="At or after this moment (ISO 8601 with offset)")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Before this moment (ISO 8601 with offset)")
    ] = None,
) -> AuditPage:
    """Who changed what, when and from where: every change made through the API or the
    console, newest first, keyset-paginated with `before_id`."""
    entries = await service.list_entries(
        session,
        limit=limit,
        before_id=before_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    return AuditPage(
        items=[AuditEntryOut.of(e) for e in entries],
        next_before_id=entries[-1].id if len(entries) == limit else None,
    )
