"""The console in a real browser against the real api, scheduler, sender and provider stub,
signed in through the real dev identity provider (tests/ui/conftest.py): the admin creates a
client and a mailing through the forms and watches it reach 100 %, pauses and resumes
another; the viewer sees the same pages and every change is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.support import database
from tests.support.processes import ProcessGroup
from tests.ui.conftest import ConsoleContext, Rig

pytestmark = pytest.mark.pipeline


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
    # The pre-send check follows the fields: one recipient, the text's segments.
    await expect(page.get_by_test_id("check-final")).to_have_text("1")
    await expect(page.locator("#check")).to_contain_text("1 per message, 1 in all")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url(re.compile(r"/ui/mailings/\d+$|/ui/mailings/\d+\?"))
    return int(re.search(r"/ui/mailings/(\d+)", page.url)[1])  # type: ignore[index]


async def test_admin_runs_a_mailing_to_the_end_and_pauses_another(
    console_context: ConsoleContext, services: ProcessGroup, rig: Rig
) -> None:
    context = await console_context("admin")
    page = await context.new_page()
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url) if r.is_navigation_request() else None)
    await page.goto("/ui/")
    assert page.url == f"{rig.base_url}/ui/"
    assert any(url.startswith(f"{rig.issuer}/auth") for url in visited), visited  # signed in
    await page.get_by_role("link", name="Clients").click()
    await page.get_by_role("link", name="Create").click()
    await page.get_by_label("Phone").fill("79161234567")
    await page.get_by_label("Time zone").fill("Europe/Moscow")
    await page.get_by_role("button", name="Create").click()
    # To the new client's own page (its phone stays out of the URL).
    await expect(page.get_by_label("Phone")).to_have_value("79161234567")
    assert "79161234567" not in page.url

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
    with database.connect(rig.db_name) as conn:
        rows = conn.execute("SELECT id, status FROM mailing ORDER BY id").fetchall()
    assert rows == [(first, "completed"), (second, "scheduled")]


async def test_the_viewer_sees_the_pages_and_every_change_is_refused(
    console_context: ConsoleContext, rig: Rig, clean_db: str
) -> None:
    with database.connect(clean_db) as conn:
        conn.execute(
            "INSERT INTO mailing (start_at, end_at, text) VALUES"
            " (now() + interval '1 hour', now() + interval '2 hours', 'Planned')"
        )
        mailing_id = conn.execute("SELECT id FROM mailing").fetchone()[0]  # type: ignore[index]
    context = await console_context("viewer")
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
            headers={"Origin": rig.base_url},
            max_redirects=0,
        )
        assert forged.status == 403, path
    with database.connect(clean_db) as conn:
        assert conn.execute("SELECT status FROM mailing").fetchone() == ("scheduled",)


async def test_admin_imports_a_csv_through_the_form_and_reads_the_rejected_rows(
    console_context: ConsoleContext, rig: Rig, clean_db: str, tmp_path: Path
) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_text(
        "phone,tag,timezone\n79160000001,vip,Europe/Moscow\n812,,UTC\n79160000001,,UTC\n"
    )
    context = await console_context("admin")
    page = await context.new_page()
    await page.goto("/ui/")
    await page.get_by_role("link", name="Imports").click()
    await page.get_by_label("Update the client from the file").check()
    await page.get_by_label("CSV file", exact=True).set_input_files(csv)
    await page.get_by_role("button", name="Import").click()  # htmx, then the import's page
    await page.wait_for_url(re.compile(r"/ui/imports/\d+"))
    live = page.locator("#import-live")
    await expect(live).to_contain_text("Done: 3 rows read.", timeout=30_000)
    await expect(page.locator("#import-progress")).to_have_attribute("value", "3")
    await expect(page.get_by_role("cell", name="duplicate of line 2")).to_be_visible()
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download every rejected row (CSV)").click()
    download = await download_info.value
    lines = Path(await download.path()).read_text().splitlines()
    assert lines[0].startswith("line,field,reason") and len(lines) == 3
    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("link", name="import clients")).to_be_visible()
    with database.connect(clean_db) as conn:
        assert conn.execute("SELECT phone, tag FROM client").fetchall() == [("79160000001", "vip")]
        assert conn.execute("SELECT on_conflict FROM client_import").fetchall() == [("update",)]


async def test_the_viewer_sees_imports_and_audit_without_the_upload_form(
    console_context: ConsoleContext, rig: Rig
) -> None:
    context = await console_context("viewer")
    page = await context.new_page()
    await page.goto("/ui/imports")
    await expect(page.get_by_text("you can look, not change")).to_be_visible()
    await expect(page.get_by_label("CSV file", exact=True)).to_have_count(0)
    await page.goto("/ui/audit")
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await expect(page.get_by_role("link", name="sign in").first).to_be_visible()  # its own
