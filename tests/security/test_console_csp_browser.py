"""Under the Content-Security-Policy the console still works in a real browser: no page
breaks a rule (Chromium reports each refused script, style or connection), htmx swaps its
live areas, the chart draws, the mailing form's preview counts; and /docs renders Swagger UI
without asking any other origin. Screenshots of the dashboard and /docs are kept in the
test's tmp_path for a person to look at."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import ConsoleMessage, Page, expect

from tests.security.console_rig import SecureRig, browser, fresh_page, secure_rig, sign_in

pytestmark = pytest.mark.timeout(180)

__all__ = ["browser", "fresh_page", "secure_rig"]

PAGES = ["/ui/", "/ui/mailings", "/ui/mailings/new", "/ui/clients", "/ui/clients/new",
         "/ui/imports", "/ui/audit", "/ui/auth/sessions"]  # fmt: skip


def watch(page: Page) -> tuple[list[str], list[str]]:
    """(CSP violations and script errors, origins asked) as the page goes."""
    problems: list[str] = []
    origins: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and (
            "Content Security Policy" in message.text or "Refused to" in message.text
        ):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: origins.append(
        f"{urlsplit(request.url).scheme}://{urlsplit(request.url).netloc}"))  # fmt: skip
    return problems, origins


async def test_the_console_works_under_its_policy(
    fresh_page: Page, secure_rig: SecureRig, tmp_path: Path
) -> None:
    page = fresh_page
    await sign_in(secure_rig, page, "admin")
    problems, origins = watch(page)
    for path in PAGES:
        response = await page.goto(secure_rig.base_url + path)
        assert response is not None and response.status == 200, path
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    # The dashboard: htmx replaces the live area by itself, uPlot draws the chart.
    await page.goto(secure_rig.base_url + "/ui/")
    await page.evaluate(
        "() => { window.swaps = 0; document.body.addEventListener("
        "'htmx:afterSwap', () => { window.swaps += 1; }); }"
    )
    await page.wait_for_function("() => window.swaps >= 1", timeout=15_000)
    await expect(page.locator("#rate-chart canvas").first).to_be_visible()
    await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    # The form's preview is fetched by htmx on load.
    await page.goto(secure_rig.base_url + "/ui/mailings/new")
    await expect(page.locator("#preview")).to_contain_text("Matches")
    # The stylesheet applies (no inline style needed): the header is laid out by console.css.
    display = await page.locator("header.top").evaluate("e => getComputedStyle(e).display")
    assert display != "block" or await page.locator("link[rel=stylesheet]").count() > 0
    assert problems == [], problems
    assert set(origins) <= {secure_rig.base_url}, set(origins)


async def test_docs_render_from_our_own_origin(
    fresh_page: Page, secure_rig: SecureRig, tmp_path: Path
) -> None:
    page = fresh_page
    problems, origins = watch(page)
    response = await page.goto(secure_rig.base_url + "/docs")
    assert response is not None and response.status == 200
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Mailing service")
    await expect(page.locator(".opblock").first).to_be_visible()
    # Open an operation and try it (a request to our own api): what Swagger UI draws later.
    await page.locator(".opblock-summary").first.click()
    await page.get_by_role("button", name="Try it out").first.click()
    await page.get_by_role("button", name="Execute").first.click()
    await expect(page.locator(".responses-wrapper .live-responses-table").first).to_be_visible()
    await page.screenshot(path=tmp_path / "docs.png")
    assert problems == [], problems
    assert set(origins) == {secure_rig.base_url}, set(origins)
