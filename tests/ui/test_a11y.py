"""axe-core in Debian's chromium: no serious or critical violation on any console page, in
English and Russian, light and dark; and the screenshots in docs/screenshots/."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from axe_playwright_python.async_playwright import Axe

from tests.api.helpers import insert_clients, insert_mailing, insert_messages
from tests.support import database
from tests.ui.conftest import ConsoleContext

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


def seed(conn: psycopg.Connection) -> dict[str, int]:
    """A directory and mailings in every state a page shows: one running mid-way."""
    clients = insert_clients(conn, 40, timezone="Europe/Moscow", tag="vip")
    insert_clients(conn, 10, first=100, operator_code="916", timezone="Asia/Vladivostok")
    running = insert_mailing(conn, status="running", text="Скидка 20% до воскресенья")
    conn.execute(
        "UPDATE mailing SET send_window_start = '09:00', send_window_end = '21:00' WHERE id = %s",
        [running],
    )
    insert_messages(conn, running, clients)
    conn.execute("UPDATE message SET status = 'sent', sent_at = now() WHERE client_id = ANY(%s)",
                 [clients[:26]])  # fmt: skip
    conn.execute("UPDATE message SET status = 'failed', attempts = 1, last_error = 'HTTP 400'"
                 " WHERE client_id = ANY(%s)", [clients[26:28]])  # fmt: skip
    conn.execute(
        "UPDATE message SET status = 'retrying', attempts = 2, last_error = 'HTTP 503',"
        " not_before = now() + interval '4 minutes' WHERE client_id = ANY(%s)",
        [clients[28:32]],
    )
    # The last hour's send rate, as the trigger would have counted it minute by minute.
    conn.execute(
        "INSERT INTO message_minute (minute, mailing_id, status, count)"
        " SELECT date_trunc('minute', now()) - make_interval(mins => m), %s, 'sent',"
        " 600 + (m * 37) %% 400 FROM generate_series(1, 45) AS m",
        [running],
    )
    scheduled = insert_mailing(conn, status="scheduled", text="Новая коллекция уже в продаже")
    conn.execute("UPDATE mailing SET start_at = now() + interval '3 hours' WHERE id = %s",
                 [scheduled])  # fmt: skip
    insert_mailing(conn, status="paused", text="Weekend offer")
    insert_mailing(conn, status="completed", text="Welcome!")
    return {"running": running, "scheduled": scheduled, "client": clients[0]}


def pages(ids: dict[str, int]) -> list[str]:
    return [
        "/ui/",
        "/ui/mailings",
        f"/ui/mailings/{ids['running']}",
        f"/ui/mailings/{ids['scheduled']}/edit",
        f"/ui/mailings/{ids['running']}/edit",
        "/ui/mailings/new",
        "/ui/clients",
        "/ui/clients/new",
        f"/ui/clients/{ids['client']}",
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "ru-RU"])
async def test_no_serious_violation_on_any_page(
    console_context: ConsoleContext, clean_db: str, locale: str, scheme: str
) -> None:
    with database.connect(clean_db) as conn:
        ids = seed(conn)
    context = await console_context("admin", locale=locale, color_scheme=scheme)
    axe = Axe()
    found: dict[str, list[str]] = {}
    page = await context.new_page()
    for path in pages(ids):
        response = await page.goto(path)
        assert response is not None and response.status == 200, path
        assert await page.get_attribute("html", "lang") == locale[:2]
        results = await axe.run(page)
        serious = [
            f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:120]})"
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        if serious:
            found[path] = serious
    assert not found, found


async def test_keyboard_slash_focuses_search(console_context: ConsoleContext) -> None:
    context = await console_context("admin")
    page = await context.new_page()
    await page.goto("/ui/mailings")
    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.id") == "q"
    await page.goto("/ui/clients")
    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.name") == "phone"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_screenshots(console_context: ConsoleContext, clean_db: str, scheme: str) -> None:
    with database.connect(clean_db) as conn:
        ids = seed(conn)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = await console_context("admin", color_scheme=scheme)
    page = await context.new_page()
    await page.goto("/ui/")
    await page.locator("#rate-chart canvas").wait_for()
    await page.screenshot(path=SCREENSHOTS / f"dashboard-{scheme}.png", full_page=True)
    await page.goto(f"/ui/mailings/{ids['running']}")
    await page.get_by_text("a retry is due at").first.wait_for()
    await page.screenshot(path=SCREENSHOTS / f"mailing-running-{scheme}.png", full_page=True)
