"""A real browser against the real api served by uvicorn on a free port.

Debian's chromium is launched through Playwright (nothing is downloaded). Until the sign-in
rig (`sign_in(page, role)` through the dev identity provider) is in this branch, a test signs
in by giving the browser the cookie of a real session row of the wanted role.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, async_playwright

from services.api.app import create_app
from services.api.events import EventPublisher, NoEvents
from services.api.principal import Role
from services.api.ui.auth import store
from services.api.ui.deps import SESSION_COOKIE
from shared.settings import ApiSettings
from tests.support.processes import free_port

CHROMIUM_FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-sandbox",
]


@dataclass
class ServedConsole:
    app: FastAPI
    base_url: str

    async def session_cookie(self, role: str) -> dict[str, object]:
        async with self.app.state.session_factory() as db:
            token, _user = await store.create(
                db,
                store.Identity(subject=f"sub-{role}", login=role, name=role.title(), email=""),
                Role(role),
                id_token=None,
                lifetimes=store.Lifetimes(idle=timedelta(hours=1), absolute=timedelta(hours=2)),
                now=datetime.now(UTC),
            )
            await db.commit()
        return {"name": SESSION_COOKIE, "value": token, "url": self.base_url, "httpOnly": True}


@contextlib.asynccontextmanager
async def served_console(
    settings: ApiSettings, events: EventPublisher | None = None
) -> AsyncIterator[ServedConsole]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = settings.model_copy(
        update={"oidc_issuer": "http://127.0.0.1:1", "oidc_client_id": "console",
                "ui_base_url": base_url}
    )  # fmt: skip
    app = create_app(settings, events=events or NoEvents())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield ServedConsole(app, base_url)
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in_context(
    browser: Browser,
    console: ServedConsole,
    role: str,
    *,
    locale: str = "en-US",
    color_scheme: str = "light",
    timezone_id: str = "UTC",
) -> BrowserContext:
    context = await browser.new_context(
        base_url=console.base_url,
        locale=locale,
        color_scheme=color_scheme,  # type: ignore[arg-type]
        timezone_id=timezone_id,
        viewport={"width": 1280, "height": 900},
    )
    await context.add_cookies([await console.session_cookie(role)])  # type: ignore[list-item]
    return context
