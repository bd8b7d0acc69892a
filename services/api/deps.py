"""Dependencies for the route handlers, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import require_admin
from services.api.events import EventPublisher
from shared.settings import ApiSettings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.session_factory() as session:
        yield session


def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def _events(request: Request) -> EventPublisher:
    return request.app.state.events


SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
EventsDep = Annotated[EventPublisher, Depends(_events)]
AdminDep = Depends(require_admin)
