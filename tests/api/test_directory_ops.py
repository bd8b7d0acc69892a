"""Opt-out through the API, CSV exports, and retry-failed (counters checked against GROUP BY)."""

from __future__ import annotations

import csv
import io

import httpx
import psycopg

from tests.api.helpers import (
    assert_error,
    counter_rows,
    create_client,
    grouped_rows,
    insert_clients,
    insert_mailing,
    insert_messages,
    set_mailing,
    unchanged,
)


async def test_opt_out_on_create_and_update(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    created = await create_client(api, opted_out=True)
    assert created["opted_out"] is True and created["opted_out_at"] is not None
    plain = await create_client(api, phone="79123456780")
    assert plain["opted_out"] is False and plain["opted_out_at"] is None
    mailing = insert_mailing(db, status="running")
    insert_messages(db, mailing, [plain["id"]])
    patched = (await api.patch(f"/clients/{plain['id']}", json={"opted_out": True})).json()
    assert patched["opted_out"] is True
    # At once: the undelivered message is cancelled in the same transaction.
    assert db.execute("SELECT status, last_error FROM message").fetchall() == [
        ("cancelled", "opted out")
    ]
    assert counter_rows(db) == grouped_rows(db)
    # PUT without opted_out leaves it; with false opts back in.
    body = {"phone": "79123456780", "timezone": "UTC"}
    assert (await api.put(f"/clients/{plain['id']}", json=body)).json()["opted_out"] is True
    body["opted_out"] = False
    assert (await api.put(f"/clients/{plain['id']}", json=body)).json()["opted_out"] is False
    audit = db.execute(
        "SELECT changes FROM audit_log WHERE target_id = %s AND action = 'update'",
        (str(plain["id"]),),
    ).fetchone()
    assert audit is not None and audit[0]["opted_out"] == {"old": False, "new": True}
    assert audit[0]["messages_cancelled"] == 1


async def test_preview_excludes_opted_out_clients(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, 5)
    db.execute("UPDATE client SET opted_out_at = now() WHERE id <= 2")
    response = await api.post("/mailings/preview", json={"filter": {}})
    assert response.json()["matching_clients"] == 3
    check = await api.post("/mailings/check", json={"filter": {}})
    assert check.json()["recipients"] == {"matching": 5, "opted_out": 2, "over_cap": 0, "final": 3}


async def test_client_export_streams_every_live_client_with_the_list_filters(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, 2500, tag="a")
    insert_clients(db, 10, first=5000, tag="b")
    db.execute("UPDATE client SET deleted_at = now() WHERE id = 1")
    response = await api.get("/clients/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 2509 and rows[0]["id"] == "2"
    assert rows[0]["opted_out_at"] == "" and rows[0]["created_at"].endswith("+00:00")
    tagged = list(csv.DictReader(io.StringIO((await api.get("/clients/export?tag=b")).text)))
    assert [r["tag"] for r in tagged] == ["b"] * 10
    assert_error(await api.get("/clients/export?phone=123"), 422, "phone")


async def test_message_export(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    clients = insert_clients(db, 3)
    mailing = insert_mailing(db, status="running")
    ids = insert_messages(db, mailing, clients)
    db.execute(
        "UPDATE message SET status = 'sent', sent_at = now(), attempts = 1 WHERE id = %s",
        (ids[0],),
    )
    db.execute(
        "UPDATE message SET status = 'failed', last_error = 'HTTP 400', attempts = 1 WHERE id = %s",
        (ids[1],),
    )
    export_path = f"/mailings/{mailing}/messages/export"
    response = await api.get(export_path)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == [
        "message_id",
        "client_id",
        "phone",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "provider",
        "provider_message_id",
    ]
    assert [(int(r["message_id"]), r["status"], r["last_error"]) for r in rows] == [
        (ids[0], "sent", ""),
        (ids[1], "failed", "HTTP 400"),
        (ids[2], "pending", ""),
    ]
    assert rows[0]["phone"] == "79120000000" and rows[0]["sent_at"]
    # Which provider took each message, and its id there: in the export and the list.
    db.execute(
        "UPDATE message SET provider = 'aggregator', provider_message_id = '0A1B' WHERE id = %s",
        (ids[0],),
    )
    exported = list(csv.DictReader(io.StringIO((await api.get(export_path)).text)))
    assert (exported[0]["provider"], exported[0]["provider_message_id"]) == ("aggregator", "0A1B")
    assert exported[1]["provider"] == ""
    listed = (await api.get(f"/mailings/{mailing}/messages")).json()["items"]
    assert (listed[0]["provider"], listed[0]["provider_message_id"]) == ("aggregator", "0A1B")
    failed = await api.get(f"/mailings/{mailing}/messages/export?status=failed")
    assert len(failed.text.splitlines()) == 2
    assert_error(await api.get("/mailings/999/messages/export"), 404, "mailing 999")


async def test_retry_failed_makes_failed_messages_due_and_keeps_the_counters(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 8)
    mailing = insert_mailing(db, status="completed")
    set_mailing(db, mailing, completed_at="sql:now()")
    statuses = ["failed", "failed", "failed", "sent", "expired", "cancelled", "failed", "sent"]
    for client, status in zip(clients, statuses, strict=True):
        insert_messages(db, mailing, [client], status=status)
    db.execute("UPDATE message SET attempts = 5, last_error = 'HTTP 400' WHERE status = 'failed'")
    before = db.execute(
        "SELECT id, status, attempts FROM message WHERE status <> 'failed' ORDER BY id"
    ).fetchall()
    response = await api.post(f"/mailings/{mailing}/retry-failed")
    assert response.status_code == 200, response.text
    assert response.json() == {"mailing_id": mailing, "retried": 4, "status": "running"}
    assert db.execute(
        "SELECT DISTINCT status, attempts, last_error, not_before <= now() FROM message"
        " WHERE client_id = ANY(%s)",
        ([c for c, s in zip(clients, statuses, strict=True) if s == "failed"],),
    ).fetchall() == [("pending", 0, None, True)]
    assert (
        db.execute(
            "SELECT id, status, attempts FROM message WHERE status <> 'pending' ORDER BY id"
        ).fetchall()
        == before
    )
    assert counter_rows(db) == grouped_rows(db)
    assert db.execute("SELECT completed_at FROM mailing").fetchone() == (None,)
    again = await api.post(f"/mailings/{mailing}/retry-failed")
    assert again.json()["retried"] == 0
    entries = db.execute(
        "SELECT changes FROM audit_log WHERE action = 'retry_failed' ORDER BY id"
    ).fetchall()
    assert [e[0] for e in entries] == [{"retried": 4}, {"retried": 0}]


async def test_retry_failed_is_refused_after_the_end_time_and_for_a_cancelled_mailing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    [client] = insert_clients(db, 1)
    ended = insert_mailing(db, status="completed")
    set_mailing(db, ended, end_at="sql:now() - interval '1 minute'")
    insert_messages(db, ended, [client], status="failed")
    cancelled = insert_mailing(db, status="cancelled")
    insert_messages(db, cancelled, [client], status="failed")
    with unchanged(db):
        assert_error(await api.post(f"/mailings/{ended}/retry-failed"), 409, "end time")
        assert_error(await api.post(f"/mailings/{cancelled}/retry-failed"), 409, "cancelled")
        assert_error(await api.post("/mailings/999/retry-failed"), 404, "mailing 999")
