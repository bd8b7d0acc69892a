"""Dependencies for the route handlers, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import admin_actor, current_actor
from services.api.events import EventPublisher
from services.api.principal import Actor
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
# Any configured token (admin or viewer): for reads. Routers take it as a router dependency.
ActorDep = Annotated[Actor, Depends(current_actor)]
# An admin token; a viewer is 403 (the OpenAPI spec marks these operations `x-required-role`).
AdminActorDep = Annotated[Actor, Depends(admin_actor)]
# As a router dependency: every route of the router needs a valid token.
TokenRequired = Depends(current_actor)
# The old name (before roles), as a route dependency: an admin token.
AdminDep = Depends(admin_actor)
