"""Cancel (stop for good, stay visible) and clone (a new scheduled copy)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from services.scheduler import sweep
from tests.api.helpers import (
    assert_error,
    create_mailing,
    in_hours,
    insert_clients,
    insert_messages,
    iso,
    message_statuses,
    set_mailing,
    start_mailing,
    unchanged,
)

WINDOW = {"start": "09:00", "end": "21:00"}
FILTER = {"operator_codes": ["912"], "tags": ["vip"]}


def clone_body(**overrides: Any) -> dict[str, Any]:
    return {"start_at": iso(in_hours(48)), "end_at": iso(in_hours(72))} | overrides


async def test_cancel_stops_for_good_and_keeps_the_mailing_visible(
    api: httpx.AsyncClient, sessions: Any, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    mid = mailing["id"]
    start_mailing(db, mid)
    clients = insert_clients(db, 4)
    sent = insert_messages(db, mid, clients[:1], "sent")
    open_ = insert_messages(db, mid, clients[1:3], "pending")
    failed = insert_messages(db, mid, clients[3:], "failed")

    response = await api.post(f"/mailings/{mid}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert (await api.get(f"/mailings/{mid}")).json()["status"] == "cancelled"
    listed = (await api.get("/mailings", params={"status": "cancelled"})).json()["items"]
    assert [m["id"] for m in listed] == [mid]

    # Its undelivered messages are cancelled as for a delete: by the scheduler's sweep, which
    # senders do not wait for (their claim refuses a mailing that is not running).
    async with sessions() as session:
        assert await sweep.cancel_chunk(session, 100) == 2
        await session.commit()
    assert message_statuses(db, sent + open_ + failed) == [
        "sent",
        "cancelled",
        "cancelled",
        "failed",
    ]
    stats = (await api.get(f"/mailings/{mid}/stats")).json()
    assert stats["status"] == "cancelled"
    assert {k: v for k, v in stats["counts"].items() if v} == {
        "sent": 1,
        "cancelled": 2,
        "failed": 1,
    }


async def test_a_cancelled_mailing_cannot_change_pause_or_resume(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    mid = mailing["id"]
    assert (await api.post(f"/mailings/{mid}/cancel")).status_code == 200
    with unchanged(db):
        again = await api.post(f"/mailings/{mid}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
        assert_error(await api.post(f"/mailings/{mid}/pause"), 409, "cancelled")
        assert_error(await api.post(f"/mailings/{mid}/resume"), 409, "cancelled")
        assert_error(await api.patch(f"/mailings/{mid}", json={"text": "x"}), 409, "cancelled")
    # DELETE keeps its meaning: cancel and hide.
    assert (await api.delete(f"/mailings/{mid}")).status_code == 204
    assert_error(await api.get(f"/mailings/{mid}"), 404)


async def test_cancel_of_a_completed_or_missing_mailing_is_refused(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    set_mailing(db, mailing["id"], status="completed", started_at="sql:now()")
    with unchanged(db):
        assert_error(await api.post(f"/mailings/{mailing['id']}/cancel"), 409, "completed")
        assert_error(await api.post("/mailings/999/cancel"), 404, "mailing 999 not found")
    assert (await api.delete(f"/mailings/{mailing['id']}")).status_code == 204
    assert_error(await api.post(f"/mailings/{mailing['id']}/cancel"), 404)


async def test_clone_makes_a_scheduled_copy_with_text_filter_and_window(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    original = await create_mailing(api, text="Sale", filter=FILTER, send_window=WINDOW)
    start_mailing(db, original["id"])
    assert (await api.post(f"/mailings/{original['id']}/cancel")).status_code == 200
    body = clone_body()
    response = await api.post(f"/mailings/{original['id']}/clone", json=body)
    assert response.status_code == 201, response.text
    copy = response.json()
    assert response.headers["location"] == f"/api/v1/mailings/{copy['id']}"
    assert copy["id"] != original["id"]
    assert copy["status"] == "scheduled" and copy["started_at"] is None
    assert (copy["text"], copy["filter"], copy["send_window"]) == ("Sale", FILTER, WINDOW)
    assert (await api.get(f"/mailings/{copy['id']}")).json() == copy
    # The original is untouched.
    assert (await api.get(f"/mailings/{original['id']}")).json()["status"] == "cancelled"


async def test_invalid_clone_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    url = f"/mailings/{mailing['id']}/clone"
    with unchanged(db):
        for body, status, fragment in [
            (clone_body(end_at=iso(in_hours(1))), 422, "end_at must be after start_at"),
            (clone_body(start_at=iso(in_hours(-5)), end_at=iso(in_hours(-1))), 422, "future"),
            (clone_body(end_at="2030-01-01T00:00:00"), 422, "timezone"),
            (clone_body(text="other"), 422, "text"),
            ({"start_at": iso(in_hours(1))}, 422, "end_at"),
        ]:
            assert_error(await api.post(url, json=body), status, fragment)
        assert_error(await api.post("/mailings/999/clone", json=clone_body()), 404)
