"""The console's security tests' rig: the dev identity provider with its test controls on
(IDP_TEST_CONTROLS: change a user's groups, spoil the ID tokens it hands out) and the api as
real processes, Debian's chromium through Playwright (tests/ui/conftest.py's launch).

Its api re-checks groups every second (UI_GROUPS_RECHECK_S=1), so a group change shows at the
next person's request. Import the fixtures a module uses by name, as tests/ui does with
pages_fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.database import sqlalchemy_url
from tests.support.processes import free_port
from tests.ui.conftest import CHROMIUM_ARGS, CLIENT_ID, CLIENT_SECRET, IDP_DIR, _stop, _wait_http

GROUPS_RECHECK_S = 1
RETRY_DELAYS = [0.2, 0.5, 1.0]


@dataclass
class SecureRig:
    base_url: str
    issuer: str
    db_name: str
    api_log: Path

    async def idp(self, control: str, **query: str) -> dict[str, Any]:
        """A dev IdP test control: groups(user=, groups=), tamper(mode=), reset()."""
        async with httpx.AsyncClient(base_url=self.issuer, timeout=5) as client:
            response = await client.post(f"/_test/{control}", params=query)
        response.raise_for_status()
        return dict(response.json())

    def sessions(self) -> list[tuple[str, str, str]]:
        """(login, role, id) of every console session."""
        with database.connect(self.db_name) as conn:
            rows = conn.execute("SELECT login, role, id FROM console_session").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


@pytest.fixture(scope="session")
async def secure_rig(
    db_name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecureRig]:
    logs = tmp_path_factory.mktemp("security-rig")
    if not (IDP_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True)
    api_port, idp_port = free_port(), free_port()
    base_url, issuer = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{idp_port}"
    idp_log, api_log = logs / "idp.log", logs / "api.log"
    with idp_log.open("wb") as out:
        idp = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=IDP_DIR,
            env=os.environ
            | {
                "IDP_PORT": str(idp_port),
                "IDP_UI_BASE_URL": base_url,
                "IDP_CLIENT_ID": CLIENT_ID,
                "IDP_CLIENT_SECRET": CLIENT_SECRET,
                "IDP_TEST_CONTROLS": "1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    namespace = new_namespace()
    api: subprocess.Popen[bytes] | None = None
    try:
        await _wait_http(f"{issuer}/.well-known/openid-configuration", idp, idp_log)
        with api_log.open("wb") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "services.api"],
                cwd=database.ROOT,
                env=os.environ
                | {
                    "DATABASE_URL": sqlalchemy_url(db_name),
                    "AMQP_URL": AMQP_URL,
                    "AMQP_NAMESPACE": namespace,
                    "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
                    "API_TOKENS": ADMIN_TOKEN,
                    "API_HOST": "127.0.0.1",
                    "API_PORT": str(api_port),
                    "LOG_FORMAT": "json",
                    "LOG_LEVEL": "DEBUG",
                    "DB_POOL_SIZE": "3",
                    "OIDC_ISSUER": issuer,
                    "OIDC_CLIENT_ID": CLIENT_ID,
                    "OIDC_CLIENT_SECRET": CLIENT_SECRET,
                    "OIDC_ADMIN_GROUPS": "mailing-admins",
                    "OIDC_VIEWER_GROUPS": "mailing-viewers",
                    "UI_BASE_URL": base_url,
                    "UI_SESSION_SECRET": "test-sign-in-state-secret",
                    "UI_GROUPS_RECHECK_S": str(GROUPS_RECHECK_S),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await _wait_http(f"{base_url}/readyz", api, api_log)
        yield SecureRig(base_url, issuer, db_name, api_log)
    finally:
        if api is not None:
            _stop(api)
        _stop(idp)
        await delete_namespace(namespace, RETRY_DELAYS)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def fresh_page(browser: Browser, secure_rig: SecureRig) -> AsyncIterator[Page]:
    """A new browser context (no cookies: no session here or at the provider), the provider's
    controls reset before and after."""
    await secure_rig.idp("reset")
    context: BrowserContext = await browser.new_context(
        base_url=secure_rig.base_url, viewport={"width": 1280, "height": 900}
    )
    try:
        yield await context.new_page()
    finally:
        await context.close()
        await secure_rig.idp("reset")


SignIn = Callable[[Page, str], Awaitable[None]]


async def fill_login(page: Page, login: str) -> None:
    await page.wait_for_selector("input[name=login]")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", f"{login}-password")
    await page.click("button[type=submit]")


async def sign_in(rig: SecureRig, page: Page, login: str, start: str = "/ui/") -> None:
    """Through the provider's login form; returns on the page the console answered with."""
    await page.goto(rig.base_url + start)
    assert page.url.startswith(rig.issuer), page.url
    await fill_login(page, login)
    await page.wait_for_url(lambda url: url.startswith(rig.base_url))
    await page.wait_for_load_state()


def console_routes(app: object, method: str) -> list[tuple[str, str]]:
    """(path template, name) of every console route taking `method`, from the app's own route
    table (FastAPI includes routers lazily: iter_route_contexts flattens them)."""
    try:
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))  # type: ignore[attr-defined]
    except ImportError:  # a FastAPI that includes routers eagerly
        routes = list(app.routes)  # type: ignore[attr-defined]
    return [
        (route.path, route.name)
        for route in routes
        if (route.path == "/ui" or route.path.startswith("/ui/"))
        and method in (getattr(route, "methods", None) or ())
    ]
