"""The console's REST-equivalent actions over httpx with real sessions: retry failed, cancel
and clone a mailing, the two CSV exports, a client's opt-out. Each goes through the REST API's
own service function (same changes, same audit row with the console user as actor), admins
only, with the CSRF token; the exports need a session and stream the REST API's own CSV."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from tests.api.helpers import insert_clients, insert_mailing, insert_messages
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]


@pytest.fixture
def db(clean_db: str):
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


def local_input(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def audit_rows(db: psycopg.Connection, action: str) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT actor_name, actor_kind, target_id FROM audit_log WHERE action = %s ORDER BY id",
        (action,),
    ).fetchall()


async def test_admin_retries_failed_cancels_and_clones_a_mailing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 3)
    mailing_id = insert_mailing(db, status="running", text="Копия")
    insert_messages(db, mailing_id, clients[:2], status="failed")
    insert_messages(db, mailing_id, clients[2:], status="sent")
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    for button in (">Retry failed<", ">Cancel the mailing<", ">Clone<", "Export messages (CSV)"):
        assert button in page.text, button

    retried = await admin.post(
        f"/ui/mailings/{mailing_id}/retry-failed", data={"csrf_token": token}
    )
    assert retried.status_code == 303
    assert "notice=retried" in retried.headers["location"]
    shown = await admin.get(retried.headers["location"])
    assert "Failed messages made due again: 2." in shown.text
    assert db.execute(
        "SELECT status, count(*) FROM message GROUP BY status ORDER BY status"
    ).fetchall() == [("pending", 2), ("sent", 1)]
    assert audit_rows(db, "retry_failed") == [("admin", "user", str(mailing_id))]

    start = datetime.now(UTC) + timedelta(hours=2)
    cloned = await admin.post(
        f"/ui/mailings/{mailing_id}/clone",
        data={
            "csrf_token": token,
            "start_at": local_input(start),
            "end_at": local_input(start + timedelta(days=1)),
            "tz": "UTC",
        },
    )
    assert cloned.status_code == 303, cloned.text
    clone_id = db.execute("SELECT max(id) FROM mailing").fetchone()[0]  # type: ignore[index]
    assert clone_id != mailing_id
    assert cloned.headers["location"].startswith(f"/ui/mailings/{clone_id}?")
    assert db.execute("SELECT status, text FROM mailing WHERE id = %s", (clone_id,)).fetchone() == (
        "scheduled",
        "Копия",
    )
    assert audit_rows(db, "clone") == [("admin", "user", str(clone_id))]

    cancelled = await admin.post(f"/ui/mailings/{mailing_id}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 303
    assert db.execute("SELECT status FROM mailing WHERE id = %s", (mailing_id,)).fetchone() == (
        "cancelled",
    )
    assert audit_rows(db, "cancel") == [("admin", "user", str(mailing_id))]
    kept = await admin.get(f"/ui/mailings/{mailing_id}")
    assert kept.status_code == 200 and ">Cancel the mailing<" not in kept.text
    # The REST rules: a cancelled mailing's messages are not sent again (409, shown as a page).
    refused = await admin.post(
        f"/ui/mailings/{mailing_id}/retry-failed", data={"csrf_token": token}
    )
    assert refused.status_code == 409 and "cancelled" in refused.text


async def test_bad_clone_input_is_422_and_creates_nothing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="running")
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    past = datetime.now(UTC) - timedelta(days=2)
    for fields in (
        {"start_at": "", "end_at": ""},
        {"start_at": local_input(past), "end_at": local_input(past + timedelta(hours=1))},
    ):
        response = await admin.post(
            f"/ui/mailings/{mailing_id}/clone", data={"csrf_token": token, "tz": "UTC", **fields}
        )
        assert response.status_code == 422, fields
    assert db.execute("SELECT count(*) FROM mailing").fetchone() == (1,)


async def test_the_viewer_sees_no_action_and_a_forged_post_changes_nothing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 1)
    mailing_id = insert_mailing(db, status="running")
    insert_messages(db, mailing_id, clients, status="failed")
    viewer = await console_client("viewer")
    token = viewer.csrf_token  # type: ignore[attr-defined]
    page = await viewer.get(f"/ui/mailings/{mailing_id}")
    assert page.status_code == 200
    for button in (">Retry failed<", ">Cancel the mailing<", ">Clone<"):
        assert button not in page.text
    assert "Export messages (CSV)" in page.text
    start = datetime.now(UTC) + timedelta(hours=1)
    forged = [
        (f"/ui/mailings/{mailing_id}/retry-failed", {}),
        (f"/ui/mailings/{mailing_id}/cancel", {}),
        (
            f"/ui/mailings/{mailing_id}/clone",
            {"start_at": local_input(start), "end_at": local_input(start + timedelta(days=1))},
        ),
        (f"/ui/clients/{clients[0]}", {"phone": "79000000000", "timezone": "UTC"}),
    ]
    for path, fields in forged:
        response = await viewer.post(path, data={"csrf_token": token, **fields})
        assert response.status_code == 403, path
    assert db.execute("SELECT id, status FROM mailing").fetchall() == [(mailing_id, "running")]
    assert db.execute("SELECT status FROM message").fetchall() == [("failed",)]
    assert db.execute("SELECT opted_out_at FROM client").fetchall() == [(None,)]
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


async def test_the_new_actions_refuse_a_post_without_the_csrf_token(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 1)
    mailing_id = insert_mailing(db, status="running")
    insert_messages(db, mailing_id, clients, status="failed")
    admin = await console_client("admin")
    for action in ("retry-failed", "cancel", "clone"):
        response = await admin.post(f"/ui/mailings/{mailing_id}/{action}", data={})
        assert response.status_code == 403, action
    assert db.execute("SELECT count(*), min(status) FROM mailing").fetchone() == (1, "running")
    assert db.execute("SELECT status FROM message").fetchall() == [("failed",)]


async def test_exports_stream_the_rest_csv_and_need_a_session(
    console_client: ConsoleClient, console_app: FastAPI, db: psycopg.Connection
) -> None:
    vip = insert_clients(db, 2, tag="vip")
    insert_clients(db, 1, first=5, tag="")
    mailing_id = insert_mailing(db, status="running")
    insert_messages(db, mailing_id, vip, status="sent")
    viewer = await console_client("viewer")
    listed = await viewer.get("/ui/clients", params={"tag": "vip"})
    assert "/ui/clients/export.csv?" in listed.text and "tag=vip" in listed.text
    clients_csv = await viewer.get("/ui/clients/export.csv", params={"tag": "vip"})
    assert clients_csv.status_code == 200 and clients_csv.headers["content-type"].startswith(
        "text/csv"
    )
    lines = clients_csv.text.splitlines()
    assert lines[0] == "id,phone,operator_code,tag,timezone,opted_out_at,created_at,updated_at"
    assert sorted(int(line.split(",")[0]) for line in lines[1:]) == vip
    bad = await viewer.get("/ui/clients/export.csv", params={"operator_code": "12"})
    assert bad.status_code == 422

    messages_csv = await viewer.get(f"/ui/mailings/{mailing_id}/messages.csv")
    assert messages_csv.status_code == 200
    rows = messages_csv.text.splitlines()
    assert rows[0].startswith("message_id,client_id,phone,status")
    assert len(rows) == 3 and all(",sent," in row for row in rows[1:])
    sent_only = await viewer.get(
        f"/ui/mailings/{mailing_id}/messages.csv", params={"msg_status": "failed"}
    )
    assert sent_only.text.splitlines()[1:] == []
    missing = await viewer.get("/ui/mailings/999999/messages.csv")
    assert missing.status_code == 404

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url="http://console.test"
    ) as anonymous:
        for path in ["/ui/clients/export.csv", f"/ui/mailings/{mailing_id}/messages.csv"]:
            response = await anonymous.get(path)
            assert response.status_code != 200, path
            assert "id,phone" not in response.text and "message_id" not in response.text


async def test_the_client_form_opts_out_and_back_in(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    created = await admin.post(
        "/ui/clients",
        data={"csrf_token": token, "phone": "79123450001", "timezone": "UTC", "opted_out": "on"},
    )
    assert created.status_code == 303, created.text
    client_id, opted = db.execute("SELECT id, opted_out_at FROM client").fetchone()  # type: ignore[misc]
    assert opted is not None
    page = await admin.get(f"/ui/clients/{client_id}")
    assert re.search(r'name="opted_out"[^>]*checked', page.text)
    assert "Opted out at" in page.text
    listed = await admin.get("/ui/clients")
    assert "Opted out" in listed.text and opted.astimezone(UTC).strftime("%Y-%m-%d") in listed.text

    saved = await admin.post(
        f"/ui/clients/{client_id}",
        data={"csrf_token": token, "phone": "79123450001", "timezone": "UTC"},
    )
    assert saved.status_code == 303
    assert db.execute("SELECT opted_out_at FROM client").fetchone() == (None,)
    changes = db.execute(
        "SELECT changes FROM audit_log WHERE action = 'replace' AND actor_name = 'admin'"
    ).fetchone()
    assert changes is not None and changes[0]["opted_out"] == {"old": True, "new": False}


async def test_the_client_form_takes_phones_as_people_write_them(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    created = await admin.post(
        "/ui/clients",
        data={"csrf_token": token, "phone": "+7 (916) 123-45-67", "timezone": "UTC"},
    )
    assert created.status_code == 303, created.text
    assert "notice=normalized" in created.headers["location"]
    # To the client's own page: the phone stays out of the URL (tests/security).
    assert "79161234567" not in created.headers["location"]
    [(client_id, stored)] = db.execute("SELECT id, phone FROM client").fetchall()
    assert stored == "79161234567"
    listed = await admin.get(created.headers["location"])
    assert "the phone was stored as 7 followed by 10 digits" in listed.text

    saved = await admin.post(
        f"/ui/clients/{client_id}",
        data={"csrf_token": token, "phone": "8 916 123 45 68", "timezone": "UTC"},
    )
    assert saved.status_code == 303
    assert db.execute("SELECT phone FROM client").fetchone() == ("79161234568",)

    refused = await admin.post(
        "/ui/clients", data={"csrf_token": token, "phone": "916 123 45 69", "timezone": "UTC"}
    )
    assert refused.status_code == 422
    assert "10 digits without a country code are ambiguous" in refused.text
    assert db.execute("SELECT count(*) FROM client").fetchone() == (1,)
