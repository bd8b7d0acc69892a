"""GET /mailings/{id}/stats says why undelivered messages wait."""

from __future__ import annotations

import httpx
import psycopg

from tests.api.helpers import insert_clients, insert_mailing, insert_messages, set_mailing


async def test_a_scheduled_mailing_waits_for_its_start(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="scheduled")
    db.execute(
        "UPDATE mailing SET start_at = now() + interval '1 hour' WHERE id = %s", [mailing_id]
    )
    body = (await api.get(f"/mailings/{mailing_id}/stats")).json()
    assert [w["reason"] for w in body["waiting"]] == ["scheduled"]
    assert "starts at" in body["waiting"][0]["detail"]


async def test_pending_messages_wait_for_the_send_window_in_the_clients_zone(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 2, timezone="Europe/Moscow")
    mailing_id = insert_mailing(db, status="running")
    # A one-minute window that is closed now, wherever the clock stands: it opened a while ago.
    now_msk = db.execute("SELECT (now() AT TIME ZONE 'Europe/Moscow')::time").fetchone()
    assert now_msk is not None
    db.execute(
        "UPDATE mailing SET send_window_start = (now() AT TIME ZONE 'Europe/Moscow')::time"
        " - interval '2 hours', send_window_end = (now() AT TIME ZONE 'Europe/Moscow')::time"
        " - interval '119 minutes' WHERE id = %s",
        [mailing_id],
    )
    insert_messages(db, mailing_id, clients)
    db.execute(
        "UPDATE message SET not_before = now() + interval '22 hours' WHERE mailing_id = %s",
        [mailing_id],
    )
    body = (await api.get(f"/mailings/{mailing_id}/stats")).json()
    assert body["counts"]["pending"] == 2
    [wait] = body["waiting"]
    assert wait["reason"] == "send_window"
    assert wait["messages"] == 2
    assert wait["timezone"] == "Europe/Moscow"
    assert wait["detail"].startswith("send window closed until ")
    assert "in the client's zone (Europe/Moscow)" in wait["detail"]


async def test_retrying_and_paused(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    clients = insert_clients(db, 3)
    mailing_id = insert_mailing(db, status="running")
    insert_messages(db, mailing_id, clients, status="retrying")
    db.execute(
        "UPDATE message SET not_before = now() + interval '5 minutes', attempts = 1"
        " WHERE mailing_id = %s",
        [mailing_id],
    )
    body = (await api.get(f"/mailings/{mailing_id}/stats")).json()
    assert [(w["reason"], w["messages"]) for w in body["waiting"]] == [("retry", 3)]
    assert body["waiting"][0]["detail"].startswith("a retry is due at ")

    set_mailing(db, mailing_id, status="paused")
    body = (await api.get(f"/mailings/{mailing_id}/stats")).json()
    assert [(w["reason"], w["messages"]) for w in body["waiting"]] == [("paused", 3)]


async def test_a_finished_mailing_waits_for_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="completed")
    assert (await api.get(f"/mailings/{mailing_id}/stats")).json()["waiting"] == []
