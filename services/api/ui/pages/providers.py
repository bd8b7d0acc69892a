"""Providers: each provider's state (binds, breaker), its rate against `max_tps`, and the last
hour's delivery rate per operator code. It reads through `services.api.providers.service`,
the REST API's own query (GET /api/v1/providers); the table refreshes itself every 5 s."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.api.deps import SessionDep
from services.api.providers import service
from services.api.providers.schemas import ProviderOut
from services.api.providers.state import ProvidersDep
from services.api.ui.deps import LiveUserDep, UserDep
from services.api.ui.templating import render

router = APIRouter(include_in_schema=False)


async def _context(session: Any, config: Any) -> dict[str, Any]:
    rows = await service.providers_overview(session, config)
    return {"providers": [ProviderOut.model_validate(row) for row in rows]}


@router.get("/ui/providers", name="ui_providers", response_class=HTMLResponse)
async def providers_page(
    request: Request, user: UserDep, session: SessionDep, config: ProvidersDep
) -> HTMLResponse:
    context = await _context(session, config)
    return render(request, "providers.html", {"user": user, "section": "providers", **context})


@router.get("/ui/providers/live", name="ui_providers_live", response_class=HTMLResponse)
async def providers_live(
    request: Request, user: LiveUserDep, session: SessionDep, config: ProvidersDep
) -> HTMLResponse:
    context = await _context(session, config)
    return render(request, "partials/providers_live.html", {"user": user, **context})
