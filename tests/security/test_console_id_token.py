"""The ID token is checked in full at sign-in: a token for another audience, signed with a
key the provider does not publish, or carrying another nonce is refused with the sign-in
failed page (not a 500), no session is made, and the log says why. Through the real dev
identity provider, which spoils the tokens it hands out (its test controls)."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page

from tests.security.console_rig import (
    SecureRig,
    browser,
    fill_login,
    fresh_page,
    secure_rig,
    sign_in,
)

pytestmark = pytest.mark.timeout(180)

__all__ = ["browser", "fresh_page", "secure_rig"]


def failures(rig: SecureRig) -> list[dict[str, str]]:
    lines = [json.loads(line) for line in rig.api_log.read_text().splitlines() if line[:1] == "{"]
    return [line for line in lines if line.get("event") == "console sign-in failed"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("aud", "'aud'"), ("signature", "bad_signature"), ("nonce", "'nonce'")],
)
async def test_a_spoiled_id_token_is_refused_with_the_sign_in_failed_page(
    fresh_page: Page, secure_rig: SecureRig, mode: str, reason: str
) -> None:
    page = fresh_page
    await secure_rig.idp("tamper", mode=mode)
    sessions_before = secure_rig.sessions()
    logged_before = len(failures(secure_rig))
    await page.goto(secure_rig.base_url + "/ui/")
    assert page.url.startswith(secure_rig.issuer), page.url
    async with page.expect_response(lambda r: "/ui/auth/callback" in r.url) as callback:
        await fill_login(page, "admin")
    response = await callback.value
    assert response.status == 400
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "Sign-in failed"
    assert secure_rig.sessions() == sessions_before  # nobody signed in
    logged = failures(secure_rig)[logged_before:]
    assert len(logged) == 1 and reason in logged[0]["reason"], logged


async def test_an_unspoiled_token_still_signs_in(fresh_page: Page, secure_rig: SecureRig) -> None:
    await sign_in(secure_rig, fresh_page, "admin")
    assert fresh_page.url == f"{secure_rig.base_url}/ui/"
    assert await fresh_page.locator("h1").inner_text() == "Dashboard"
