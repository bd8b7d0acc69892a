"""The console in a real browser against the real api, scheduler, sender and provider stub:
the admin creates a client and a mailing through the forms and watches it reach 100 %,
pauses and resumes another; the viewer sees the same pages and every change is refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from services.api.events import AmqpEvents
from services.provider_stub.app import start_stub
from shared.settings import ApiSettings
from tests.support import database
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.processes import ProcessGroup
from tests.ui.browser_rig import ServedConsole, browser, served_console, signed_in_context

__all__ = ["browser"]

pytestmark = pytest.mark.pipeline

RETRY_DELAYS = [0.2, 0.5, 1.0]


@dataclass
class Stack:
    console: ServedConsole
    db_name: str


@pytest.fixture
async def stack(api_settings: ApiSettings, clean_db: str, tmp_path: Path) -> AsyncIterator[Stack]:
    namespace = new_namespace()
    stub = await start_stub()
    processes = ProcessGroup(
        {
            "DATABASE_URL": database.sqlalchemy_url(clean_db),
            "AMQP_URL": AMQP_URL,
            "AMQP_NAMESPACE": namespace,
            "PROVIDER_URL": stub.url,
            "PROVIDER_TOKEN": "stub-token",
            "LOG_FORMAT": "json",
            "POLL_INTERVAL_S": "0.5",
            "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
            "DB_POOL_SIZE": "3",
        },
        tmp_path,
    )
    settings = api_settings.model_copy(update={"amqp_namespace": namespace})
    events = AmqpEvents(AMQP_URL, namespace)
    try:
        for proc in [processes.start("scheduler"), processes.start("sender")]:
            await proc.wait_ready()
        async with served_console(settings, events) as console:
            yield Stack(console, clean_db)
    finally:
        processes.stop_all()
        await stub.close()
        await delete_namespace(namespace, RETRY_DELAYS)


def local_input(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


async def create_mailing(page: Page, text: str, start: datetime, operator_code: str) -> int:
    await page.goto("/ui/mailings/new")
    await page.get_by_label("Text").fill(text)
    await expect(page.locator("#text-info")).to_contain_text("SMS")
    await page.get_by_label("Time zone of Start and End").select_option("UTC")
    await page.get_by_label("Start", exact=True).fill(local_input(start))
    await page.get_by_label("End", exact=True).fill(local_input(start + timedelta(hours=2)))
    await page.get_by_label("Operator code").fill(operator_code)
    await expect(page.locator("#preview")).to_contain_text("Matches 1 clients now.")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url(re.compile(r"/ui/mailings/\d+$|/ui/mailings/\d+\?"))
    return int(re.search(r"/ui/mailings/(\d+)", page.url)[1])  # type: ignore[index]


async def test_admin_runs_a_mailing_to_the_end_and_pauses_another(
    browser: Browser, stack: Stack
) -> None:
    context = await signed_in_context(browser, stack.console, "admin")
    try:
        page = await context.new_page()
        await page.goto("/ui/")
        await page.get_by_role("link", name="Clients").click()
        await page.get_by_role("link", name="Create").click()
        await page.get_by_label("Phone").fill("79161234567")
        await page.get_by_label("Time zone").fill("Europe/Moscow")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("cell", name="79161234567")).to_be_visible()

        # Starts at once (a minute ago, the datetime-local input's precision).
        now = datetime.now(UTC)
        first = await create_mailing(page, "Скидка 20%", now - timedelta(minutes=1), "916")
        progress = page.locator("#mailing-progress")
        await expect(progress).to_have_attribute("value", "1", timeout=60_000)
        await expect(progress).to_have_attribute("max", "1")
        await expect(page.get_by_test_id("percent")).to_have_text("100%")
        await expect(page.locator("#mailing-live")).to_contain_text("completed", timeout=30_000)
        assert await page.locator("#mailing-live").get_attribute("hx-get") is None  # stopped

        await page.get_by_role("link", name="Dashboard").click()
        breaker = page.locator("dt", has_text="Circuit breaker").locator("xpath=../dd")
        await expect(breaker).to_have_text("closed")  # reported by the real sender

        second = await create_mailing(page, "Later", now + timedelta(hours=3), "916")
        assert second != first
        await page.get_by_role("button", name="Pause").click()
        await expect(page.locator("#mailing-live")).to_contain_text("paused")
        await page.get_by_role("button", name="Resume").click()
        await expect(page.locator("#mailing-live")).to_contain_text("scheduled")
    finally:
        await context.close()
    with database.connect(stack.db_name) as conn:
        rows = conn.execute("SELECT id, status FROM mailing ORDER BY id").fetchall()
    assert rows == [(first, "completed"), (second, "scheduled")]


async def test_the_viewer_sees_the_pages_and_every_change_is_refused(
    browser: Browser, stack: Stack
) -> None:
    with database.connect(stack.db_name) as conn:
        conn.execute(
            "INSERT INTO mailing (start_at, end_at, text) VALUES"
            " (now() + interval '1 hour', now() + interval '2 hours', 'Planned')"
        )
        mailing_id = conn.execute("SELECT id FROM mailing").fetchone()[0]  # type: ignore[index]
    context = await signed_in_context(browser, stack.console, "viewer")
    try:
        page = await context.new_page()
        for path in ["/ui/", "/ui/mailings", f"/ui/mailings/{mailing_id}", "/ui/clients"]:
            await page.goto(path)
            await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
            await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
            await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
        await page.goto(f"/ui/mailings/{mailing_id}")
        csrf = await page.locator("input[name=csrf_token]").first.input_value()
        for path in [f"/ui/mailings/{mailing_id}/pause", f"/ui/mailings/{mailing_id}/delete"]:
            forged = await page.request.post(
                path,
                form={"csrf_token": csrf},
                headers={"Origin": stack.console.base_url},
                max_redirects=0,
            )
            assert forged.status == 403, path
    finally:
        await context.close()
    with database.connect(stack.db_name) as conn:
        assert conn.execute("SELECT status FROM mailing").fetchone() == ("scheduled",)
