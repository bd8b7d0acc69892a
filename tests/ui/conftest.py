"""The one browser rig of tests/ui: the dev identity provider (scripts/dev-idp, node) and the
api (with the console) as real processes on free ports, Debian's chromium through Playwright.

Every browser test signs in through the provider's own login form: `sign_in(page, role)` does
it by hand; `console_context(role)` gives a browser context that signed in as that role once
per test session (the login form, then the browser's storage state is kept). A new context
with that state still goes through the provider: it starts with the provider's cookies only,
so its first page sends it to the provider, which knows the browser and sends it straight
back with a new code (single sign-on): a real OpenID Connect round trip and a new session.
The page-flow tests start the scheduler and the sender next to that api (`services`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import ADMIN_TOKEN
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.database import ROOT, sqlalchemy_url
from tests.support.processes import ProcessGroup, free_port
from tests.support.waiting import wait_until

IDP_DIR = ROOT / "scripts" / "dev-idp"
CLIENT_ID = "console"
CLIENT_SECRET = "console-test-secret"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# Short retries, so a page-flow test sees a retry through within its deadline.
RETRY_DELAYS = [0.2, 0.5, 1.0]
HTTPX_BASE_URL = "http://console.test"  # the httpx rig's in-process console (pages_fixtures)


@dataclass
class Rig:
    base_url: str  # the console's UI_BASE_URL
    issuer: str
    db_name: str
    api_log: Path
    namespace: str  # the api's broker namespace (the page flows' scheduler and sender share it)
    logs: Path
    states: dict[str, Any] = field(default_factory=dict)  # role -> signed-in storage state


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> Awaitable[bool]:
    async def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    return wait_until(up, timeout=60, interval=0.1, message=f"{url} up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
async def rig(db_name: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    """The dev identity provider and the api (with the console), both real processes."""
    logs = tmp_path_factory.mktemp("ui-rig")
    if not (IDP_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True)
    api_port, idp_port = free_port(), free_port()
    base_url, issuer = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{idp_port}"
    idp_log = logs / "idp.log"
    with idp_log.open("wb") as out:
        idp = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=IDP_DIR,
            env=os.environ
            | {
                "IDP_PORT": str(idp_port),
                "IDP_UI_BASE_URL": f"{base_url},{HTTPX_BASE_URL}",
                "IDP_CLIENT_ID": CLIENT_ID,
                "IDP_CLIENT_SECRET": CLIENT_SECRET,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api_log = logs / "api.log"
    namespace = new_namespace()
    api: subprocess.Popen[bytes] | None = None
    try:
        await _wait_http(f"{issuer}/.well-known/openid-configuration", idp, idp_log)
        with api_log.open("wb") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "services.api"],
                cwd=ROOT,
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
                    "LOG_LEVEL": "DEBUG",  # so a token written at any level would show
                    "DB_POOL_SIZE": "3",
                    "OIDC_ISSUER": issuer,
                    "OIDC_CLIENT_ID": CLIENT_ID,
                    "OIDC_CLIENT_SECRET": CLIENT_SECRET,
                    "OIDC_ADMIN_GROUPS": "mailing-admins",
                    "OIDC_VIEWER_GROUPS": "mailing-viewers",
                    "UI_BASE_URL": base_url,
                    "UI_SESSION_SECRET": "test-sign-in-state-secret",
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await _wait_http(f"{base_url}/readyz", api, api_log)
        yield Rig(base_url, issuer, db_name, api_log, namespace, logs)
    finally:
        if api is not None:
            _stop(api)
        _stop(idp)
        await delete_namespace(namespace, RETRY_DELAYS)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(chromium: Browser, rig: Rig) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) with one page."""
    context = await chromium.new_context(base_url=rig.base_url)
    try:
        yield await context.new_page()
    finally:
        await context.close()


SignIn = Callable[[Page, str], Awaitable[None]]


async def _fill_login(page: Page, login: str) -> None:
    await page.wait_for_selector("input[name=login]")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", f"{login}-password")
    await page.click("button[type=submit]")


@pytest.fixture
def sign_in(rig: Rig) -> SignIn:
    """Signs in as "admin", "viewer" or "nobody" through the provider's login form, starting
    from the dashboard; returns on the page the console answered with."""

    async def go(page: Page, role: str, start: str = "/ui/") -> None:
        await page.goto(rig.base_url + start)
        assert page.url.startswith(rig.issuer), page.url
        await _fill_login(page, role)
        await page.wait_for_url(lambda url: url.startswith(rig.base_url))
        await page.wait_for_load_state()

    return go


ConsoleContext = Callable[..., Awaitable[BrowserContext]]


@pytest.fixture
async def console_context(chromium: Browser, rig: Rig) -> AsyncIterator[ConsoleContext]:
    """`await console_context("admin", locale=..., color_scheme=..., timezone_id=...)`: a
    browser context signed in as that role through the provider (see the module's text)."""
    made: list[BrowserContext] = []

    async def make(
        role: str,
        *,
        locale: str = "en-US",
        color_scheme: str = "light",
        timezone_id: str = "UTC",
    ) -> BrowserContext:
        options: dict[str, Any] = {
            "base_url": rig.base_url,
            "locale": locale,
            "color_scheme": color_scheme,
            "timezone_id": timezone_id,
            "viewport": {"width": 1280, "height": 900},
        }
        if role not in rig.states:
            first = await chromium.new_context(**options)
            try:
                page = await first.new_page()
                await page.goto(rig.base_url + "/ui/")
                assert page.url.startswith(rig.issuer), page.url
                await _fill_login(page, role)
                await page.wait_for_url(lambda url: url.startswith(rig.base_url))
                state = await first.storage_state()
            finally:
                await first.close()
            # Only the provider's cookies: the console's (session, remembered time zone and
            # language, all on path /ui) are made anew by each context.
            cookies = [c for c in state["cookies"] if not c["path"].startswith("/ui")]
            rig.states[role] = {**state, "cookies": cookies}
        context = await chromium.new_context(storage_state=rig.states[role], **options)
        made.append(context)
        return context

    yield make
    for context in made:
        await context.close()


@pytest.fixture
async def services(rig: Rig, clean_db: str, tmp_path: Path) -> AsyncIterator[ProcessGroup]:
    """The scheduler and the sender beside the rig's api (its database and broker namespace),
    sending to a provider stub of this test's own."""
    from services.provider_stub.app import start_stub

    stub = await start_stub()
    processes = ProcessGroup(
        {
            "DATABASE_URL": sqlalchemy_url(clean_db),
            "AMQP_URL": AMQP_URL,
            "AMQP_NAMESPACE": rig.namespace,
            "PROVIDER_URL": stub.url,
            "PROVIDER_TOKEN": "stub-token",
            "LOG_FORMAT": "json",
            "POLL_INTERVAL_S": "0.5",
            "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
            "DB_POOL_SIZE": "3",
        },
        tmp_path,
    )
    try:
        for proc in [processes.start("scheduler"), processes.start("sender")]:
            await proc.wait_ready()
        yield processes
    finally:
        processes.stop_all()
        await stub.close()


@pytest.fixture
def session_rows(rig: Rig) -> Iterator[Callable[[], list[tuple[str, str]]]]:
    from tests.support import database

    def rows() -> list[tuple[str, str]]:
        with database.connect(rig.db_name) as conn:
            found = conn.execute("SELECT login, role FROM console_session").fetchall()
        return [(str(a), str(b)) for a, b in found]

    yield rows
