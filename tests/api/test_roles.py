"""Roles: a viewer token reads everything and changes nothing; the spec says who may do what."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.api.helpers import (
    assert_error,
    insert_clients,
    insert_mailing,
    insert_messages,
    start_mailing,
)
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN

CSV_BODY = b"phone,tag,timezone\n79120000099,vip,UTC\n"
# The non-GET operations a viewer may call: the pre-send check (and its old name) counts
# clients and changes nothing.
VIEWER_POSTS = {"preview_mailing", "check_mailing"}


@pytest.fixture
async def viewer(api_app: object, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://api.test",
        headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
    ) as client:
        yield client


def _example_body(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    """The request as the spec shows it: the body's example, so the request would change
    something if the role let it through."""
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return {"json": (schema.get("examples") or [{}])[0]}
    if "text/csv" in content:
        return {"content": CSV_BODY, "headers": {"Content-Type": "text/csv"}}
    if "multipart/form-data" in content:
        return {"files": {"file": ("clients.csv", CSV_BODY, "text/csv")}}
    return {}


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every token-checked operation: the gateway's signed callbacks (x-required-role none,
    tests/api/test_auth.py names them) take no token, so no role either."""
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in item.items()
        if operation.get("x-required-role") != "none"
    ]


def _every_table(db: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in the schema (audit log, imports, whatever comes next)."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
        ).fetchall()
    ]
    assert {"client", "mailing", "message", "audit_log"} <= set(tables)
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in sorted(tables)}


async def test_a_viewer_is_refused_every_change_and_nothing_changes(
    viewer: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    clients = insert_clients(db, 2)
    mailing = insert_mailing(db)
    running = insert_mailing(db)
    start_mailing(db, running)
    insert_messages(db, running, clients, "failed")
    ids = {"client_id": clients[0], "mailing_id": running}
    spec = (await viewer.get("/openapi.json")).json()
    writes = [op for op in _operations(spec) if op[0] != "GET"]
    assert len(writes) >= 12, writes
    before = _every_table(db)
    refused = set()
    for method, path, operation in writes:
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), mailing)), path)
        with subtests.test(msg=f"{method} {path}"):
            response = await viewer.request(method, url, **_example_body(spec, operation))
            if operation["operationId"] in VIEWER_POSTS:
                assert response.status_code == 200, response.text
                assert operation["x-required-role"] == "viewer"
            else:
                assert_error(response, 403, "viewer", "may only read")
                assert operation["x-required-role"] == "admin"
                refused.add(operation["operationId"])
    assert {"create_client", "delete_mailing", "cancel_mailing", "clone_mailing"} <= refused
    assert _every_table(db) == before


async def test_a_viewer_reads_every_get_operation(
    viewer: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    clients = insert_clients(db, 1)
    mailing = insert_mailing(db)
    insert_messages(db, mailing, clients, "sent")
    spec = (await viewer.get("/openapi.json")).json()
    reads = [op for op in _operations(spec) if op[0] == "GET"]
    ids = {"client_id": clients[0], "mailing_id": mailing}
    for _, path, operation in reads:
        with subtests.test(msg=path):
            assert operation["x-required-role"] == "viewer"
            if re.search(r"\{(?!client_id|mailing_id)\w+\}", path):
                continue  # an id this test has no row for (an import): 404 is its answer
            url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
            response = await viewer.get(url)
            assert response.status_code == 200, response.text


async def test_viewer_refusal_comes_before_body_validation(viewer: httpx.AsyncClient) -> None:
    # A viewer learns nothing about the shape of a body it may not send.
    response = await viewer.post("/api/v1/clients", json={"phone": "bad"})
    assert_error(response, 403, "token 'reports' has the role viewer")


async def test_every_api_operation_names_its_role_and_documents_403(
    viewer: httpx.AsyncClient,
) -> None:
    spec = (await viewer.get("/openapi.json")).json()
    for method, path, operation in _operations(spec):
        role = operation["x-required-role"]
        assert role in ("admin", "viewer"), (method, path)
        assert f"**{role}**" in operation["description"], (method, path)
        if role == "admin":
            error = operation["responses"]["403"]["content"]["application/json"]
            assert error["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        else:
            assert "403" not in operation["responses"], (method, path)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "x-required-role" not in spec["paths"][path]["get"]


async def test_admin_tokens_still_change_data(anon: httpx.AsyncClient, clean_db: str) -> None:
    for n, token in enumerate((ADMIN_TOKEN, "second-token")):
        response = await anon.post(
            "/api/v1/clients",
            json={"phone": f"7912000000{n}", "timezone": "UTC"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text


def test_a_malformed_api_tokens_entry_stops_the_app_without_showing_the_token() -> None:
    settings = ApiSettings(api_tokens=[SecretStr("ok-token"), SecretStr("ci:owner:s3cret")])
    with pytest.raises(ValueError, match="entry 2 \\(ci\\): role must be admin or viewer") as err:
        create_app(settings, events=NoEvents())
    assert "s3cret" not in str(err.value)


def test_api_tokens_from_the_environment_keep_names_and_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_TOKENS", "first, ci:admin:a:b ,dash:viewer:c")
    app = create_app(ApiSettings(), events=NoEvents())
    assert [(t.name, t.role.value) for t in app.state.api_tokens] == [
        ("token-1", "admin"),
        ("ci", "admin"),
        ("dash", "viewer"),
    ]
