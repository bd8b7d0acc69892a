"""Every console response carries the browser security headers: a Content-Security-Policy
with no inline script, no framing, nosniff, same-origin referrers, and `no-store` on every
page and file with personal data (pages, fragments, exports); the static files stay
cacheable. HSTS when UI_BASE_URL is https. /docs serves Swagger UI from our own origin.
(The browser test beside it checks the pages still work under that policy.)"""

from __future__ import annotations

import re

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.security.console_rig import console_routes
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]


def policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


def console_get_paths(app: object) -> list[str]:
    """Every console GET route, path parameters filled with 1."""
    skipped = ("/ui/static", "/ui/auth/login", "/ui/auth/callback", "/ui/language")
    return [
        re.sub(r"\{[^}]+\}", "1", path)
        for path, _ in console_routes(app, "GET")
        if not path.startswith(skipped)  # files, and redirects to the provider or back
    ]


def assert_browser_headers(response: httpx.Response, *, no_store: bool = True) -> None:
    headers = response.headers
    csp = policy(headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"], csp
    assert csp["style-src"] == ["'self'"], csp
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"], csp
    assert csp["default-src"] == ["'self'"], csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    if no_store:
        assert headers["cache-control"] == "no-store", response.url


async def test_every_console_page_and_fragment_has_the_headers(
    console_app: object, console_client: ConsoleClient
) -> None:
    admin = await console_client("admin")
    paths = console_get_paths(console_app)
    assert {"/ui/", "/ui/clients", "/ui/clients/export.csv", "/ui/dashboard/live"} <= set(paths)
    for path in paths:
        response = await admin.get(path)
        assert response.status_code < 500, (path, response.status_code)
        assert_browser_headers(response)
    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url=str(admin.base_url)
    )
    async with anonymous:
        for path in ["/ui/", "/ui/no-such-page", "/ui/auth/signed-out"]:
            assert_browser_headers(await anonymous.get(path))  # redirects and errors too


async def test_the_export_of_personal_data_is_not_stored(console_client: ConsoleClient) -> None:
    admin = await console_client("admin")
    response = await admin.get("/ui/clients/export.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.headers["cache-control"] == "no-store"


async def test_static_files_stay_cacheable_with_nosniff(console_client: ConsoleClient) -> None:
    viewer = await console_client("viewer")
    response = await viewer.get("/ui/static/console.js")
    assert response.status_code == 200
    assert_browser_headers(response, no_store=False)
    assert response.headers["cache-control"] != "no-store"


async def test_the_sign_out_form_may_go_on_to_the_provider(
    console_client: ConsoleClient, console_settings: ApiSettings
) -> None:
    """The only other origin a console form leads to: the provider's end-session page."""
    viewer = await console_client("viewer")
    csp = policy((await viewer.get("/ui/")).headers["content-security-policy"])
    assert csp["form-action"] == ["'self'", str(console_settings.oidc_issuer)]


@pytest.mark.parametrize(
    ("base_url", "hsts"), [("https://console.test", True), ("http://console.test", False)]
)
async def test_hsts_when_the_console_is_served_over_https(
    console_settings: ApiSettings, base_url: str, hsts: bool
) -> None:
    app = create_app(console_settings.model_copy(update={"ui_base_url": base_url}), NoEvents())
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        for path in ["/ui/", "/healthz", "/docs"]:
            headers = (await client.get(path)).headers
            assert ("strict-transport-security" in headers) is hsts, path
            if hsts:
                assert headers["strict-transport-security"] == "max-age=31536000"


async def test_docs_load_swagger_ui_from_our_own_origin(console_app: object) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url="http://console.test"
    ) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        csp = policy(page.headers["content-security-policy"])
        assert csp["script-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(source.startswith("/docs/static/") for source in sources)
        assert "<script>" not in page.text  # no inline script
        for source in sources:
            served = await client.get(source)
            assert served.status_code == 200 and served.content, source
            assert served.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/docs/static/swagger-ui-5.0.0/swagger-ui.css")).status_code == 404
        assert (await client.get(sources[0].rsplit("/", 1)[0] + "/index.html")).status_code == 404
