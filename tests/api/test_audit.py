"""The audit log: every change through the API leaves one entry, in the change's transaction;
a refused change leaves none; `GET /audit` filters and pages them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.exc import IntegrityError

from services.api.app import create_app
from services.api.audit import record_sign_in
from services.api.audit import service as audit
from services.api.events import NoEvents
from services.api.mailings import service as mailings
from services.api.principal import Actor, Role
from shared.settings import ApiSettings
from tests.api.helpers import (
    assert_error,
    create_client,
    create_mailing,
    insert_mailing,
    mailing_body,
    start_mailing,
)
from tests.conftest import VIEWER_TOKEN
from tests.support.waiting import wait_until

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def audit_rows(db: psycopg.Connection) -> list[dict[str, Any]]:
    cursor = db.execute(
        "SELECT actor_name, actor_kind, actor_role, action, target_type, target_id, request_id,"
        " source, changes FROM audit_log ORDER BY id"
    )
    names = [c.name for c in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


async def test_each_kind_of_change_leaves_one_entry(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    client = await create_client(api, phone="79161234567", tag="vip")
    cid = client["id"]
    assert (await api.patch(f"/clients/{cid}", json={"tag": "new"})).status_code == 200
    put = await api.put(f"/clients/{cid}", json={"phone": "79161234568", "timezone": "UTC"})
    assert put.status_code == 200
    assert (await api.delete(f"/clients/{cid}")).status_code == 204
    mailing = await create_mailing(api, text="Hello")
    mid = mailing["id"]
    assert (await api.patch(f"/mailings/{mid}", json={"text": "Hi"})).status_code == 200
    assert (await api.post(f"/mailings/{mid}/pause")).status_code == 200
    assert (await api.post(f"/mailings/{mid}/resume")).status_code == 200
    body = {"start_at": mailing["start_at"], "end_at": mailing["end_at"]}
    clone = (await api.post(f"/mailings/{mid}/clone", json=body)).json()
    assert (await api.post(f"/mailings/{mid}/cancel")).status_code == 200
    assert (await api.delete(f"/mailings/{clone['id']}")).status_code == 204

    rows = audit_rows(db)
    assert [(r["action"], r["target_type"], r["target_id"]) for r in rows] == [
        ("create", "client", str(cid)),
        ("update", "client", str(cid)),
        ("replace", "client", str(cid)),
        ("delete", "client", str(cid)),
        ("create", "mailing", str(mid)),
        ("update", "mailing", str(mid)),
        ("pause", "mailing", str(mid)),
        ("resume", "mailing", str(mid)),
        ("clone", "mailing", str(clone["id"])),
        ("cancel", "mailing", str(mid)),
        ("delete", "mailing", str(clone["id"])),
    ]
    for row in rows:
        assert (row["actor_name"], row["actor_kind"], row["actor_role"]) == (
            "token-1",
            "token",
            "admin",
        )
        assert row["request_id"] and row["source"] == "127.0.0.1"
    changes = [r["changes"] for r in rows]
    assert changes[0] == {
        "phone": "7916*****67",
        "operator_code": "916",
        "tag": "vip",
        "timezone": "Europe/Moscow",
    }
    assert changes[1] == {"tag": {"old": "vip", "new": "new"}}
    assert changes[2]["phone"] == {"old": "7916*****67", "new": "7916*****68"}
    assert changes[3] == {"phone": "7916*****68", "messages_cancelled": 0}
    assert changes[4]["text"] == "Hello"
    assert changes[5] == {"text": {"old": "Hello", "new": "Hi"}}
    assert changes[6] == {"status": {"old": "scheduled", "new": "paused"}}
    assert changes[7] == {"status": {"old": "paused", "new": "scheduled"}}
    assert changes[8]["cloned_from"] == mid and changes[8]["text"] == "Hi"
    assert changes[9] == {"status": {"old": "scheduled", "new": "cancelled"}}
    # No phone in clear anywhere in the log.
    assert not re.search(r"7916\d{7}", str(changes))


async def test_the_entry_carries_the_responses_request_id(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    response = await api.post(
        "/clients",
        json={"phone": "79161234567", "timezone": "UTC"},
        headers={"X-Request-ID": "trace-abc-123"},
    )
    assert response.headers["x-request-id"] == "trace-abc-123"
    generated = await api.post("/mailings", json=mailing_body())
    rows = audit_rows(db)
    assert [r["request_id"] for r in rows] == ["trace-abc-123", generated.headers["x-request-id"]]


async def test_refused_changes_leave_no_entry(
    api: httpx.AsyncClient, anon: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    await create_client(api, phone="79161234567")
    mailing = await create_mailing(api)
    start_mailing(db, mailing["id"])
    before = audit_rows(db)
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    refused = [
        await api.post("/clients", json={"phone": "79161234567", "timezone": "UTC"}),  # 409
        await api.post("/clients", json={"phone": "bad", "timezone": "UTC"}),  # 422
        await api.patch("/clients/999", json={"tag": "x"}),  # 404
        await api.patch(f"/mailings/{mailing['id']}", json={"filter": {"tags": ["x"]}}),  # 409
        await api.post("/mailings", json=mailing_body(end_at="2001-01-01T00:00:00Z")),  # 422
        await anon.post("/api/v1/clients", json={"phone": "79160000000", "timezone": "UTC"}),
        await anon.delete(f"/api/v1/mailings/{mailing['id']}", headers=viewer),  # 403
    ]
    assert [r.status_code for r in refused] == [409, 422, 404, 409, 422, 401, 403]
    # An idempotent replay changes nothing either.
    key = {"Idempotency-Key": "k-1"}
    body = mailing_body()
    assert (await api.post("/mailings", json=body, headers=key)).status_code == 201
    replay = await api.post("/mailings", json=body, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    after = audit_rows(db)
    assert after[: len(before)] == before
    assert [(r["action"], r["target_type"]) for r in after[len(before) :]] == [
        ("create", "mailing")
    ]


async def test_entry_and_change_share_one_transaction(
    sessions: Any, db: psycopg.Connection
) -> None:
    """A change whose audit entry cannot be written is not made either (and the other way
    round: a change that fails at commit leaves no entry, see above)."""
    mailing_id = insert_mailing(db)
    unknown_kind = Actor("robot", Role.ADMIN, "robot")  # type: ignore[arg-type]
    async with sessions() as session:
        with pytest.raises(IntegrityError, match="ck_audit_log_actor_kind_known"):
            await mailings.pause_mailing(session, mailing_id, actor=unknown_kind)
    row = db.execute("SELECT status FROM mailing WHERE id = %s", (mailing_id,)).fetchone()
    assert row == ("scheduled",)
    assert audit_rows(db) == []


async def test_sign_in_helper_records_a_user(sessions: Any, db: psycopg.Connection) -> None:
    user = Actor("alice@example.com", Role.VIEWER, "user", "req-1", "10.0.0.5")
    async with sessions() as session:
        await record_sign_in(session, user, groups=["mailing-viewers"], password="hunter2")
        await session.commit()
    [row] = audit_rows(db)
    assert row == {
        "actor_name": "alice@example.com",
        "actor_kind": "user",
        "actor_role": "viewer",
        "action": "sign_in",
        "target_type": "user",
        "target_id": "alice@example.com",
        "request_id": "req-1",
        "source": "10.0.0.5",
        "changes": {"groups": ["mailing-viewers"], "password": "***"},
    }


def test_changes_are_cleaned_of_secrets_and_phones() -> None:
    assert audit.clean_changes(
        {
            "phone": {"old": "79161234567", "new": "79161234568"},
            "nested": {"token": "abc", "phones": ["79161234567"]},
            "at": datetime(2030, 1, 1, tzinfo=UTC),
        }
    ) == {
        "phone": {"old": "7916*****67", "new": "7916*****68"},
        "nested": {"token": "***", "phones": ["7916*****67"]},
        "at": "2030-01-01T00:00:00Z",
    }


# --- GET /audit ------------------------------------------------------------------------------


async def test_list_filters_and_pages_newest_first(
    api: httpx.AsyncClient, anon: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    client = await create_client(api)
    mailing = await create_mailing(api)
    await api.post(f"/mailings/{mailing['id']}/pause")
    await api.post(f"/mailings/{mailing['id']}/resume")
    other = {"Authorization": "Bearer second-token"}
    await anon.delete(f"/api/v1/clients/{client['id']}", headers=other)

    # A viewer may read the log.
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    everything = (await anon.get("/api/v1/audit", headers=viewer)).json()
    assert [e["action"] for e in everything["items"]] == [
        "delete",
        "resume",
        "pause",
        "create",
        "create",
    ]
    assert everything["next_before_id"] is None
    newest = everything["items"][0]
    assert newest["actor"] == {
        "name": "token-2",
        "kind": "token",
        "role": "admin",
        "subject": None,
        "issuer": None,
    }
    assert newest["target_type"] == "client" and newest["target_id"] == str(client["id"])
    assert ISO_WITH_OFFSET.match(newest["at"]), newest["at"]

    async def actions(**query: Any) -> list[str]:
        response = await api.get("/audit", params=query)
        assert response.status_code == 200, response.text
        return [e["action"] for e in response.json()["items"]]

    assert await actions(actor="token-2") == ["delete"]
    assert await actions(action="create") == ["create", "create"]
    assert await actions(target_type="mailing") == ["resume", "pause", "create"]
    assert await actions(target_type="client", target_id=str(client["id"])) == [
        "delete",
        "create",
    ]
    now = datetime.now(UTC)
    assert len(await actions(since=(now - timedelta(minutes=5)).isoformat())) == 5
    assert await actions(until=(now - timedelta(minutes=5)).isoformat()) == []
    assert await actions(since=(now + timedelta(minutes=5)).isoformat()) == []

    # Keyset pages of two: newest first, no entry twice, none missing.
    seen, before_id = [], None
    while True:
        query: dict[str, Any] = {"limit": 2} | ({"before_id": before_id} if before_id else {})
        page = (await api.get("/audit", params=query)).json()
        seen += [e["id"] for e in page["items"]]
        before_id = page["next_before_id"]
        if before_id is None:
            break
    assert seen == [e["id"] for e in everything["items"]]


async def test_invalid_list_parameters_are_422(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for query in [
        {"since": "2030-01-01T00:00:00"},  # no offset
        {"until": "yesterday"},
        {"limit": 0},
        {"limit": 1001},
        {"before_id": 0},
        {"actor": ""},
        {"action": "a\x00b"},
    ]:
        with subtests.test(msg=str(query)):
            assert_error(await api.get("/audit", params=query), 422)


# --- retention -------------------------------------------------------------------------------


def _insert_entry(db: psycopg.Connection, age: timedelta) -> None:
    db.execute(
        "INSERT INTO audit_log (at, actor_name, actor_kind, actor_role, action, target_type)"
        " VALUES (now() - %s, 'token-1', 'token', 'admin', 'create', 'client')",
        (age,),
    )


@pytest.fixture
async def pruning_app(api_settings: ApiSettings) -> AsyncIterator[Any]:
    settings = api_settings.model_copy(
        update={"audit_retention_days": 7, "audit_prune_interval_s": 0.1}
    )
    app = create_app(settings, events=NoEvents())
    async with LifespanManager(app) as manager:
        yield manager.app


async def test_entries_past_the_retention_are_pruned_by_the_api(
    db: psycopg.Connection, pruning_app: Any
) -> None:
    _insert_entry(db, timedelta(days=8))
    _insert_entry(db, timedelta(days=6))

    async def only_the_young_one_left() -> bool:
        return db.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)

    await wait_until(only_the_young_one_left, timeout=10, message="the old entry pruned")
    row = db.execute("SELECT now() - at < interval '7 days' FROM audit_log").fetchone()
    assert row == (True,)


async def test_without_a_retention_nothing_is_pruned(sessions: Any, db: psycopg.Connection) -> None:
    _insert_entry(db, timedelta(days=3650))
    assert ApiSettings().audit_retention_days is None  # the default: keep
    async with sessions() as session:
        assert await audit.prune(session, retention_days=3651, now=datetime.now(UTC)) == 0
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
