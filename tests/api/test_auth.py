"""Bearer-token authentication: every /api/v1 call needs a configured token, health does not."""

from __future__ import annotations

import re

import httpx
import psycopg
import pytest

from tests.api.helpers import assert_error, mailing_body, row_counts
from tests.conftest import ADMIN_TOKEN


async def test_every_api_call_without_a_token_is_401(
    anon: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    # Every operation in the spec under /api/v1, so a new route without auth is caught too.
    # The one exception: the gateway's callbacks, proven by their URL's signature instead
    # (tests/api/test_receipts.py refuses forged ones with 403).
    paths = (await anon.get("/openapi.json")).json()["paths"]
    unsigned = {
        path
        for path, item in paths.items()
        for operation in item.values()
        if operation.get("x-required-role") == "none"
    }
    assert unsigned == {
        "/api/v1/receipts/kannel/{provider}",
        "/api/v1/receipts/kannel/{provider}/replies",
    }
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, item in paths.items()
        if path.startswith("/api/v1/") and path not in unsigned
        for method in item
    ]
    assert len(operations) >= 17
    for method, path in operations:
        with subtests.test(msg=f"{method} {path}"):
            response = await anon.request(method, path, json={})
            assert_error(response, 401, "missing bearer token")


async def test_wrong_token_is_401(anon: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for authorization in [
        "Bearer wrong-token",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Bearer {ADMIN_TOKEN.upper()}",  # tokens are case-sensitive
        "Bearer second-token-but-longer",
    ]:
        with subtests.test(msg=authorization):
            response = await anon.get("/api/v1/clients", headers={"Authorization": authorization})
            assert_error(response, 401, "invalid bearer token")


async def test_other_schemes_and_empty_credentials_are_401(
    anon: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for authorization in [
        f"Basic {ADMIN_TOKEN}",
        f"Token {ADMIN_TOKEN}",
        ADMIN_TOKEN,  # no scheme at all
        "Bearer",
        "Bearer ",
        "",
    ]:
        with subtests.test(msg=repr(authorization)):
            response = await anon.get("/api/v1/clients", headers={"Authorization": authorization})
            assert_error(response, 401, "bearer token")


async def test_both_configured_tokens_work(anon: httpx.AsyncClient, clean_db: str) -> None:
    for token in (ADMIN_TOKEN, "second-token"):
        response = await anon.get("/api/v1/clients", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_after_id": None}


async def test_scheme_name_is_case_insensitive(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/api/v1/clients", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text


async def test_unauthenticated_writes_change_nothing(
    anon: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    before = row_counts(db)
    bad = {"Authorization": "Bearer nope"}
    responses = [
        await anon.post(
            "/api/v1/clients", json={"phone": "79123456789", "timezone": "UTC"}, headers=bad
        ),
        await anon.post("/api/v1/mailings", json=mailing_body()),
        await anon.post("/api/v1/mailings", json=mailing_body(), headers=bad),
    ]
    assert [r.status_code for r in responses] == [401, 401, 401]
    assert row_counts(db) == before


async def test_auth_is_checked_before_body_validation(anon: httpx.AsyncClient) -> None:
    # An anonymous caller learns nothing about the expected shape of the body.
    response = await anon.post("/api/v1/clients", json={"phone": "bad"})
    assert_error(response, 401)


async def test_healthz_needs_no_token(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_needs_no_token_and_reports_the_database(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/readyz")
    # 503 only if the broker is down; the database answers either way.
    assert response.status_code in (200, 503), response.text
    assert response.json()["checks"]["database"] == "ok"


async def test_openapi_spec_is_public(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert "/api/v1/clients" in spec["paths"]
    assert "/api/v1/mailings/{mailing_id}/stats" in spec["paths"]


async def test_unknown_route_is_a_json_404(api: httpx.AsyncClient) -> None:
    # An unknown route is a JSON 404, not a crash or an HTML page.
    response = await api.get("/no-such-thing")
    assert_error(response, 404)
