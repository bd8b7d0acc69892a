"""The pages' httpx rig: the api (console mounted by create_app) and `console_client(role)`,
an httpx client holding a real session row of that role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services.api.app import create_app
from services.api.principal import Role
from services.api.ui.auth import store
from services.api.ui.deps import SESSION_COOKIE
from shared.settings import ApiSettings

BASE_URL = "http://console.test"
ConsoleClient = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def console_settings(api_settings: ApiSettings) -> ApiSettings:
    return api_settings.model_copy(
        update={
            "oidc_issuer": "http://127.0.0.1:1",
            "oidc_client_id": "console",
            "ui_base_url": BASE_URL,
        }
    )


@pytest.fixture(scope="session")
async def console_app(console_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    """The app object itself (its state holds the session factory); served with its lifespan."""
    from services.api.events import NoEvents

    app = create_app(console_settings, events=NoEvents())
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def console_client(console_app: FastAPI, clean_db: str) -> AsyncIterator[ConsoleClient]:
    clients: list[httpx.AsyncClient] = []

    async def make(role: str) -> httpx.AsyncClient:
        now = datetime.now(UTC)
        async with console_app.state.session_factory() as db:
            token, user = await store.create(
                db,
                store.Identity(subject=f"sub-{role}", login=role, name=role.title(), email=""),
                Role(role),
                id_token=None,
                lifetimes=store.Lifetimes(idle=timedelta(hours=1), absolute=timedelta(hours=2)),
                now=now,
            )
            await db.commit()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=console_app),
            base_url=BASE_URL,
            cookies={SESSION_COOKIE: token},
            headers={"Origin": BASE_URL},
        )
        client.csrf_token = user.csrf_token  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
