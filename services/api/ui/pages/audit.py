"""The audit log as a page: who changed what and when, filtered by actor, action, target and
time range, newest first with keyset pagination; every filter is in the URL (a view can be
shared as a link). It reads through `services.api.audit.service.list_entries`, the REST
API's own query, on the log's indexes (actor, action, target, time)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.api.audit import service
from services.api.deps import SessionDep
from services.api.ui.deps import UserDep
from services.api.ui.templating import admin_timezone, gettext_for, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
# The filter's actions and targets, with their words, are listed once, in audit.html.


def _moment(value: str, tz: str) -> datetime | None:
    """A `datetime-local` value read in the admin's zone; None when empty or unreadable."""
    try:
        return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(tz)) if value else None
    except ValueError:
        return None


def _value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _changes(changes: object) -> list[str]:
    """`field: old → new` for each changed field; other details as `key: value`."""
    if not changes:
        return []
    if not isinstance(changes, dict):
        return [_value(changes)]
    lines = []
    for key, value in sorted(changes.items()):
        if isinstance(value, dict) and set(value) == {"old", "new"}:
            lines.append(f"{key}: {_value(value['old'])} → {_value(value['new'])}")
        else:
            lines.append(f"{key}: {_value(value)}")
    return lines


@router.get("/ui/audit", name="ui_audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    actor: str = Query("", max_length=200),
    action: str = Query("", max_length=200),
    target_type: str = Query("", max_length=200),
    target_id: str = Query("", max_length=200),
    since: str = Query("", max_length=40),
    until: str = Query("", max_length=40),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> HTMLResponse:
    _ = gettext_for(request)
    tz = admin_timezone(request)
    filters = {
        "actor": actor.strip(),
        "action": action.strip(),
        "target_type": target_type.strip(),
        "target_id": target_id.strip(),
        "since": since.strip(),
        "until": until.strip(),
    }
    errors: dict[str, str] = {}
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        moments[name] = _moment(filters[name], tz)
        if filters[name] and moments[name] is None:
            errors[name] = _("Enter a date and time.")
    entries: list[Any] = []
    if not errors:
        entries = await service.list_entries(
            session,
            limit=PAGE_SIZE,
            before_id=before,
            actor=filters["actor"].replace("\x00", "") or None,
            action=filters["action"].replace("\x00", "") or None,
            target_type=filters["target_type"].replace("\x00", "") or None,
            target_id=filters["target_id"].replace("\x00", "") or None,
            since=moments["since"],
            until=moments["until"],
        )
    return render(
        request,
        "audit.html",
        {
            "user": user,
            "section": "audit",
            "entries": [{"entry": e, "changes": _changes(e.changes)} for e in entries],
            "filters": filters,
            "errors": errors,
            "next_before": entries[-1].id if len(entries) == PAGE_SIZE else None,
            "first_page": before is None,
        },
    )
