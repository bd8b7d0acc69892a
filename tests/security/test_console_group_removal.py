"""An account removed from the admin group loses admin within the re-check interval (here
1 s, 300 s by default), not when its session ends: a person's next request re-reads the
groups at the provider (refresh token grant), the old session ends, and signing in again
gives the role the groups give now. Through the real dev identity provider, whose test
controls change a user's groups at run time."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from services.api.ui.auth import store
from tests.security.console_rig import SecureRig, browser, fresh_page, secure_rig, sign_in
from tests.support import database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

__all__ = ["browser", "fresh_page", "secure_rig"]


def session_ids(rig: SecureRig, login: str, role: str) -> set[str]:
    return {
        sid for found, found_role, sid in rig.sessions() if (found, found_role) == (login, role)
    }


async def shown_role(page: Page, rig: SecureRig) -> str:
    await page.goto(rig.base_url + "/ui/")
    await page.wait_for_load_state()
    role = page.locator(".who .role")
    return await role.inner_text() if await role.count() else ""


async def test_an_admin_moved_to_viewers_is_a_viewer_at_the_next_request(
    fresh_page: Page, secure_rig: SecureRig
) -> None:
    page = fresh_page
    before = session_ids(secure_rig, "admin", "admin")
    await sign_in(secure_rig, page, "admin")
    assert await shown_role(page, secure_rig) == "admin"
    (admin_session,) = session_ids(secure_rig, "admin", "admin") - before
    with database.connect(secure_rig.db_name) as db:
        sealed = db.execute(
            "SELECT provider_tokens FROM console_session WHERE id = %s", [admin_session]
        ).fetchone()
    assert sealed is not None and sealed[0]  # the refresh token is kept, sealed
    # Still an admin: the re-checks in between keep the session.
    await wait_until(
        lambda: _is(shown_role(page, secure_rig), "admin"), timeout=10, message="re-checked"
    )
    assert admin_session in session_ids(secure_rig, "admin", "admin")

    await secure_rig.idp("groups", user="admin", groups="mailing-viewers")
    await wait_until(
        lambda: _is(shown_role(page, secure_rig), "viewer"), timeout=30, interval=0.5,
        message="the console to show the viewer role",
    )  # fmt: skip
    assert admin_session not in session_ids(secure_rig, "admin", "admin")  # the old one ended
    assert session_ids(secure_rig, "admin", "viewer")  # a new sign-in (single sign-on)
    # And it can change nothing any more.
    response = await page.request.post(
        secure_rig.base_url + "/ui/clients", form={"phone": "79001234567"}
    )
    assert response.status == 403


async def test_an_admin_removed_from_every_group_loses_the_console(
    fresh_page: Page, secure_rig: SecureRig
) -> None:
    page = fresh_page
    before = {sid for _, _, sid in secure_rig.sessions()}
    await sign_in(secure_rig, page, "admin")
    assert await shown_role(page, secure_rig) == "admin"
    assert {sid for _, _, sid in secure_rig.sessions()} - before  # this browser's session
    await secure_rig.idp("groups", user="admin", groups="")

    async def refused() -> bool:
        response = await page.goto(secure_rig.base_url + "/ui/clients")
        return response is not None and response.status == 403

    await wait_until(refused, timeout=30, interval=0.5, message="the console to refuse")
    assert "admin@example.test" in await page.locator("main").inner_text()
    assert not {sid for _, _, sid in secure_rig.sessions()} - before  # it ended, no new one


async def _is(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]


def test_the_kept_token_opens_only_with_its_sessions_cookie() -> None:
    sealed = store.seal("cookie-token-a", {"refresh_token": "refresh-123"})
    assert sealed is not None and "refresh-123" not in sealed
    assert store.unseal("cookie-token-a", sealed) == {"refresh_token": "refresh-123"}
    assert store.unseal("cookie-token-b", sealed) == {}  # the table alone opens nothing
