"""The sign-in's pure rules and the console's answers without a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from services.api.principal import Role
from services.api.ui.auth import store
from services.api.ui.auth.oidc import claim_at, groups_of, identity_of, role_for
from services.api.ui.auth.router import safe_next
from services.api.ui.deps import SESSION_COOKIE
from services.api.ui.pages.common import choose_language
from shared.settings import ApiSettings

BASE = "http://console.test"


def test_groups_claim_by_name_and_by_dot_path() -> None:
    claims = {"groups": ["a"], "realm_access": {"roles": ["ops", "b"]}, "x.y": ["dotted"]}
    assert groups_of(claim_at(claims, "groups")) == {"a"}
    assert groups_of(claim_at(claims, "realm_access.roles")) == {"ops", "b"}
    assert groups_of(claim_at(claims, "x.y")) == {"dotted"}
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at(claims, "groups.deeper") is None
    assert groups_of("single") == {"single"}
    assert groups_of(None) == set() and groups_of({"not": "a list"}) == set()


def test_role_from_groups_admin_wins_and_none_without_a_group() -> None:
    assert role_for({"adm", "view"}, ["adm"], ["view"]) is Role.ADMIN
    assert role_for({"view"}, ["adm"], ["view"]) is Role.VIEWER
    assert role_for({"other"}, ["adm"], ["view"]) is None
    assert role_for(set(), [], []) is None


def test_identity_prefers_the_username_then_email_then_subject() -> None:
    assert identity_of({"sub": "s", "preferred_username": "u", "email": "e@x"}).login == "u"
    assert identity_of({"sub": "s", "email": "e@x"}).login == "e@x"
    assert identity_of({"sub": "s"}).login == "s"


def test_lifetimes_idle_and_absolute() -> None:
    life = store.Lifetimes(idle=timedelta(minutes=30), absolute=timedelta(hours=8))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert life.alive(created_at=t0, last_seen_at=t0, now=t0 + timedelta(minutes=29))
    assert not life.alive(created_at=t0, last_seen_at=t0, now=t0 + timedelta(minutes=31))
    busy = t0 + timedelta(hours=7, minutes=59)
    assert life.alive(created_at=t0, last_seen_at=busy, now=busy + timedelta(seconds=30))
    assert not life.alive(created_at=t0, last_seen_at=busy, now=t0 + timedelta(hours=8))


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "https://elsewhere",
        "//elsewhere",
        "/\\elsewhere",
        "/ui\\..\\x",
        "javascript:alert(1)",
        "/uielsewhere",
        "/ui/\t/x",
        "/api/v1/clients",
    ],
)
def test_next_never_leaves_the_console(value: str | None) -> None:
    assert safe_next(value) == "/ui/"


def test_next_keeps_console_paths() -> None:
    assert safe_next("/ui/mailings?status=running") == "/ui/mailings?status=running"


async def test_the_language_switch_goes_back_only_to_the_console() -> None:
    """The language switch redirects through the same rule as sign-in."""
    response = await choose_language("ru", "/uielsewhere")
    assert response.headers["location"] == "/ui/"
    response = await choose_language("ru", "/ui/clients?tag=vip")
    assert response.headers["location"] == "/ui/clients?tag=vip"


@pytest.fixture(scope="module")
async def sso_app(api_settings: ApiSettings) -> AsyncIterator[object]:
    settings = api_settings.model_copy(
        update={"oidc_issuer": "http://127.0.0.1:9", "oidc_client_id": "c", "ui_base_url": BASE}
    )
    app = create_app(settings, events=NoEvents())
    async with LifespanManager(app):
        yield app


async def _client_with_session(app: object, role: Role) -> tuple[httpx.AsyncClient, str]:
    async with app.state.session_factory() as db:  # type: ignore[attr-defined]
        token, user = await store.create(
            db,
            store.Identity(subject=f"s-{role}", login=str(role), name="", email=""),
            role,
            id_token="secret-id-token",
            lifetimes=store.Lifetimes(idle=timedelta(hours=1), absolute=timedelta(hours=2)),
            now=datetime.now(UTC),
        )
        await db.commit()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url=BASE,
        cookies={SESSION_COOKIE: token},
    )
    return client, user.csrf_token


async def test_csrf_token_and_origin_are_both_required(sso_app: object, clean_db: str) -> None:
    client, csrf = await _client_with_session(sso_app, Role.ADMIN)
    async with client:
        page = await client.get("/ui/auth/sessions")
        assert page.status_code == 200 and "secret-id-token" not in page.text
        url = "/ui/auth/sessions/end"
        good = {"Origin": BASE}
        assert (await client.post(url, data={"session_id": "x"}, headers=good)).status_code == 403
        bad_token = {"session_id": "x", "csrf_token": "wrong"}
        assert (await client.post(url, data=bad_token, headers=good)).status_code == 403
        data = {"session_id": "x", "csrf_token": csrf}
        evil = {"Origin": "http://evil.test"}
        assert (await client.post(url, data=data, headers=evil)).status_code == 403
        assert (await client.post(url, data=data)).status_code == 403  # no Origin nor Referer
        referer = {"Referer": f"{BASE}/ui/auth/sessions"}
        assert (await client.post(url, data=data, headers=referer)).status_code == 303
        header = {"Origin": BASE, "X-CSRF-Token": csrf}
        assert (await client.post(url, data={"session_id": "x"}, headers=header)).status_code == 303


async def test_without_session_pages_redirect_and_htmx_gets_hx_redirect(
    sso_app: object,
) -> None:
    transport = httpx.ASGITransport(app=sso_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as anon:
        # The provider (port 9) is not there: a clear 502 page, never a 500.
        assert (await anon.get("/ui/auth/sessions")).status_code == 502
        hx = await anon.get(
            "/ui/auth/sessions", headers={"HX-Request": "true", "HX-Current-URL": f"{BASE}/ui/x"}
        )
        assert hx.status_code == 401
        assert hx.headers["hx-redirect"] == "/ui/auth/login?next=%2Fui%2Fx"
        assert (await anon.post("/ui/auth/logout")).status_code == 303


async def test_sso_not_configured_answers_a_clear_page(api_settings: ApiSettings) -> None:
    app = create_app(api_settings, events=NoEvents())
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url=BASE) as anon:
        for path in ("/ui/", "/ui/auth/login", "/ui/auth/sessions"):
            response = await anon.get(path)
            assert response.status_code == 503, path
            assert "OIDC_ISSUER" in response.text
