"""axe-core in Debian's chromium: no serious or critical violation on any console page, in
English and Russian, light and dark; and the screenshots in docs/screenshots/."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import expect

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
    # Receipts (issue 19): most delivered, a few not, the last ones still awaiting one.
    conn.execute("UPDATE message SET provider = 'default', provider_message_id = id::text"
                 " WHERE client_id = ANY(%s)", [clients[:26]])  # fmt: skip
    conn.execute("UPDATE message SET status = 'delivered' WHERE client_id = ANY(%s)",
                 [clients[:20]])  # fmt: skip
    conn.execute("UPDATE message SET status = 'undelivered', last_error = 'UNDELIV err:011'"
                 " WHERE client_id = ANY(%s)", [clients[20:23]])  # fmt: skip
    conn.execute(
        "INSERT INTO message_reply (provider, phone, text, client_id, mailing_id, stop)"
        " SELECT 'default', phone, t, id, %s, t = 'STOP' FROM client"
        " JOIN (VALUES (0, 'Спасибо, приду!'), (1, 'STOP')) AS r(n, t) ON client.id = %s + r.n",
        [running, clients[0]],
    )
    conn.execute(
        "INSERT INTO provider_state (instance, provider, kind, can_take, breaker_state, rate)"
        " VALUES ('sender-7d9f:1', 'default', 'fabrique', true, 'closed', 41.5),"
        " ('sender-7d9f:2', 'default', 'fabrique', true, 'closed', 38.0)"
    )
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
    # A finished import with rejected rows, and the audit log of a morning's work.
    imported = conn.execute(
        "INSERT INTO client_import (status, on_conflict, fingerprint, bytes, rows, created,"
        " updated, skipped, rejected, actor, finished_at)"
        " VALUES ('done', 'update', 'seed', 48213, 1204, 1150, 31, 12, 11, 'admin', now())"
        " RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        "INSERT INTO client_import_rejection (import_id, line, field, reason, phone, timezone)"
        " SELECT %s, 10 + g * 97, CASE WHEN g %% 3 = 0 THEN 'timezone' ELSE 'phone' END,"
        " CASE WHEN g %% 3 = 0 THEN 'unknown time zone: Europe/Moskow'"
        " WHEN g %% 3 = 1 THEN 'phone must be 7 followed by 10 digits, e.g. 79123456789'"
        " ELSE 'duplicate of line ' || (g * 97 - 40) END,"
        " CASE WHEN g %% 3 = 1 THEN '8916123' ELSE '7916' || lpad(g::text, 7, '0') END,"
        " CASE WHEN g %% 3 = 0 THEN 'Europe/Moskow' ELSE 'Europe/Moscow' END"
        " FROM generate_series(1, 11) AS g",
        [imported],
    )
    conn.execute(
        "INSERT INTO audit_log (at, actor_name, actor_kind, actor_role, action, target_type,"
        " target_id, request_id, source, changes) VALUES"
        " (now() - interval '50 minutes', 'admin', 'user', 'admin', 'import_clients',"
        "  'client_import', %s, 'a1f0c2', '10.0.3.7',"
        '  \'{"rows": 1204, "created": 1150, "rejected": 11}\'),'
        " (now() - interval '40 minutes', 'admin', 'user', 'admin', 'create', 'mailing', %s,"
        "  'b7e91d', '10.0.3.7', '{\"text\": \"Скидка 20%% до воскресенья\"}'),"
        " (now() - interval '20 minutes', 'crm-sync', 'token', 'admin', 'update', 'mailing', %s,"
        '  \'c33a09\', \'10.0.8.2\', \'{"end_at": {"old": "2026-12-03T18:00:00+03:00",'
        '  "new": "2026-12-04T18:00:00+03:00"}}\'),'
        " (now() - interval '5 minutes', 'admin', 'user', 'admin', 'pause', 'mailing', %s,"
        '  \'d04b11\', \'10.0.3.7\', \'{"status": {"old": "running", "new": "paused"}}\')',
        [imported, running, scheduled, running],
    )
    return {"running": running, "scheduled": scheduled, "client": clients[0], "import": imported}


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
        "/ui/imports",
        f"/ui/imports/{ids['import']}",
        "/ui/audit",
        "/ui/providers",
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
@pytest.mark.parametrize("locale", ["en-US", "ru-RU"])
async def test_screenshots(
    console_context: ConsoleContext, clean_db: str, locale: str, scheme: str
) -> None:
    """docs/screenshots/ (English) and docs/screenshots/ru/: the dashboard, a running mailing,
    an import with rejected rows, the audit log and the providers, light and dark."""
    with database.connect(clean_db) as conn:
        ids = seed(conn)
    folder = SCREENSHOTS if locale.startswith("en") else SCREENSHOTS / "ru"
    folder.mkdir(parents=True, exist_ok=True)
    context = await console_context("admin", locale=locale, color_scheme=scheme,
                                    timezone_id="Europe/Moscow")  # fmt: skip
    page = await context.new_page()
    await page.goto("/ui/")  # the first page remembers the browser's zone (a cookie)
    await page.wait_for_function("document.cookie.includes('ui_tz=')")
    await page.goto("/ui/")
    await expect(page.locator("footer")).to_contain_text("Europe/Moscow")
    await page.locator("#rate-chart canvas").wait_for()
    await page.screenshot(path=folder / f"dashboard-{scheme}.png", full_page=True)
    await page.goto(f"/ui/mailings/{ids['running']}")
    await page.locator("#mailing-live .waiting").wait_for()
    await page.screenshot(path=folder / f"mailing-running-{scheme}.png", full_page=True)
    await page.goto(f"/ui/imports/{ids['import']}")
    await page.screenshot(path=folder / f"import-{scheme}.png", full_page=True)
    await page.goto("/ui/audit")
    await page.screenshot(path=folder / f"audit-{scheme}.png", full_page=True)
    await page.goto("/ui/providers")
    await page.locator("table.providers").wait_for()
    await page.screenshot(path=folder / f"providers-{scheme}.png", full_page=True)
