"""Sign-in in a real browser through the real dev identity provider, against the api process."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, Page

from services.api.ui.deps import SESSION_COOKIE
from tests.support import database
from tests.ui.conftest import Rig, SignIn

pytestmark = pytest.mark.timeout(180)


async def session_cookie(page: Page) -> str:
    cookies = {c["name"]: c for c in await page.context.cookies()}
    cookie = cookies[SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"
    return str(cookie["value"])


def logins(rig: Rig) -> list[str]:
    with database.connect(rig.db_name) as conn:
        return [str(r[0]) for r in conn.execute("SELECT login FROM console_session").fetchall()]


def sign_ins(rig: Rig) -> list[tuple[str, str, str]]:
    """The audit log's sign-in entries: (actor, kind, role)."""
    with database.connect(rig.db_name) as conn:
        rows = conn.execute(
            "SELECT actor_name, actor_kind, actor_role FROM audit_log WHERE action = 'sign_in'"
        ).fetchall()
    return [(str(a), str(k), str(r)) for a, k, r in rows]


async def test_admin_signs_in_and_sign_out_ends_the_session(
    page: Page, rig: Rig, sign_in: SignIn
) -> None:
    await sign_in(page, "admin", "/ui/mailings?status=running")
    assert page.url == f"{rig.base_url}/ui/mailings?status=running"  # back to the page asked for
    token = await session_cookie(page)
    assert "admin" in logins(rig)
    assert ("admin", "user", "admin") in sign_ins(rig)  # audited with the session's creation
    await page.get_by_role("button", name="Sign out").first.click()
    # Local session ended, then the provider's; its post-logout redirect lands on /ui/, which
    # (no session any more) sends the browser to the provider's sign-in.
    await page.wait_for_url(lambda url: url.startswith(rig.issuer) and "/interaction/" in url)
    async with httpx.AsyncClient(base_url=rig.base_url, cookies={SESSION_COOKIE: token}) as old:
        response = await old.get("/ui/")
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith(rig.issuer)
    text = rig.api_log.read_text()
    assert token not in text  # the cookie never reaches the logs


async def test_account_in_no_group_gets_403_naming_it_and_no_session(
    page: Page, rig: Rig, sign_in: SignIn
) -> None:
    before = logins(rig).count("nobody")
    responses: list[int] = []
    page.on(
        "response", lambda r: responses.append(r.status) if "/ui/auth/callback" in r.url else None
    )
    await sign_in(page, "nobody")
    assert responses == [403]
    assert "nobody@example.test" in await page.content()
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    assert logins(rig).count("nobody") == before
    assert not [entry for entry in sign_ins(rig) if entry[0] == "nobody"]  # refused: no entry


async def test_next_elsewhere_does_not_redirect_away(page: Page, rig: Rig) -> None:
    await page.goto(f"{rig.base_url}/ui/auth/login?next=https://elsewhere.test/steal")
    await page.fill("input[name=login]", "admin")
    await page.fill("input[name=password]", "x")
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: url.startswith(rig.base_url))
    assert page.url == f"{rig.base_url}/ui/"


async def test_posts_without_csrf_token_or_from_another_origin_are_refused(
    page: Page, rig: Rig, sign_in: SignIn
) -> None:
    await sign_in(page, "admin")
    token = await session_cookie(page)
    cookies = {SESSION_COOKIE: token}
    origin = {"Origin": rig.base_url}
    async with httpx.AsyncClient(base_url=rig.base_url, cookies=cookies) as client:
        no_token = await client.post("/ui/auth/sessions/end-all", data={}, headers=origin)
        assert no_token.status_code == 403
        wrong = await client.post(
            "/ui/auth/sessions/end-all", data={"csrf_token": "nope"}, headers=origin
        )
        assert wrong.status_code == 403
    # A forged form on another site, with the session's real CSRF token even: other origin.
    with database.connect(rig.db_name) as conn:
        csrf = conn.execute(
            "SELECT csrf_token FROM console_session WHERE login = 'admin'"
            " ORDER BY created_at DESC LIMIT 1"
        ).fetchone()[0]
    async with httpx.AsyncClient(base_url=rig.base_url, cookies=cookies) as client:
        forged = await client.post(
            "/ui/auth/sessions/end-all",
            data={"csrf_token": csrf},
            headers={"Origin": "http://evil.test"},
        )
        assert forged.status_code == 403
    # None of them ended the session.
    await page.goto(f"{rig.base_url}/ui/auth/sessions")
    assert page.url == f"{rig.base_url}/ui/auth/sessions"


async def test_viewer_forged_post_is_403(page: Page, rig: Rig, sign_in: SignIn) -> None:
    await sign_in(page, "viewer")
    # The viewer's own browser posting a change with a valid token: refused by the server.
    status = await page.evaluate(
        """async () => {
            const token = document.querySelector('input[name=csrf_token]').value;
            const body = new URLSearchParams({csrf_token: token, phone: '79001234567'});
            const r = await fetch('/ui/clients', {method: 'POST', body});
            return r.status;
        }"""
    )
    assert status == 403


async def test_expired_session_sends_the_browser_back_to_sign_in(
    page: Page, rig: Rig, sign_in: SignIn
) -> None:
    await sign_in(page, "admin")
    with database.connect(rig.db_name) as conn:
        conn.execute(
            "UPDATE console_session SET expires_at = now() - interval '1 second'"
            " WHERE login = 'admin'"
        )
    old = await session_cookie(page)
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url) if r.is_navigation_request() else None)
    await page.goto(f"{rig.base_url}/ui/mailings")
    # Sent to the provider's sign-in; the provider still knows the browser (single sign-on),
    # so it comes straight back with a new code: a new session, on the page asked for.
    assert any(url.startswith(f"{rig.issuer}/auth") for url in visited), visited
    assert page.url == f"{rig.base_url}/ui/mailings"
    assert await session_cookie(page) != old


async def test_sign_out_everywhere_ends_every_session_of_the_account(
    page: Page, chromium: Browser, rig: Rig, sign_in: SignIn
) -> None:
    other = await chromium.new_context(base_url=rig.base_url)
    try:
        elsewhere = await other.new_page()
        await sign_in(elsewhere, "viewer")
        other_token = await session_cookie(elsewhere)
        await sign_in(page, "viewer")
        # The account's name in the header leads to its sessions, both browsers listed.
        await page.get_by_role("link", name="Signed in as").click()
        await page.get_by_role("heading", name="Your sessions").wait_for()
        rows = page.locator("tbody tr")
        assert await rows.count() >= 2
        await page.get_by_role("button", name="Sign out everywhere").click()
        await page.wait_for_url(lambda url: url.startswith(rig.issuer))
        # The other browser's console session is gone too: its cookie opens nothing, and its
        # next page goes through the provider again (which, holding that browser's own
        # provider session, signs it in anew: a new console session).
        async with httpx.AsyncClient(
            base_url=rig.base_url, cookies={SESSION_COOKIE: other_token}
        ) as old:
            response = await old.get("/ui/")
        assert response.status_code in (302, 303)
        assert response.headers["location"].startswith(rig.issuer)
        await elsewhere.goto(f"{rig.base_url}/ui/mailings")
        assert await session_cookie(elsewhere) != other_token
    finally:
        await other.close()


async def test_an_unknown_or_deleted_page_is_a_console_page_not_json(
    page: Page, rig: Rig, sign_in: SignIn
) -> None:
    await sign_in(page, "viewer")
    for path in ("/ui/no-such-page", "/ui/mailings/987654321"):
        response = await page.goto(rig.base_url + path)
        assert response is not None and response.status == 404
        assert "text/html" in response.headers["content-type"]
        await page.get_by_role("heading", name="Not found").wait_for()
        await page.get_by_role("link", name="Back to the dashboard").wait_for()
