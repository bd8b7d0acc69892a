"""The console's import and audit pages over httpx with real sessions: an upload through the
form runs the REST API's own import (same rules, same counts, same audit entry); the viewer
sees both pages and cannot upload; nothing is reachable without a session; the audit log's
filters and keyset pages live in the URL."""

from __future__ import annotations

import re

import psycopg
import pytest
from fastapi import FastAPI

from tests.api.helpers import insert_clients
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

CSV = (
    "phone,tag,timezone\n"
    "79160000001,vip,Europe/Moscow\n"
    "79160000002,,Asia/Tokyo\n"
    "812,,UTC\n"
    "79160000001,dup,UTC\n"
    "79160000003,,Mars/Olympus\n"
)


@pytest.fixture
def db(clean_db: str):
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


async def upload(client, csv: str, on_conflict: str = "skip", **extra: str):
    return await client.post(
        "/ui/imports",
        data={"csrf_token": client.csrf_token, "on_conflict": on_conflict, **extra},
        files={"file": ("clients.csv", csv.encode(), "text/csv")},
    )


async def test_admin_uploads_a_csv_and_reads_counts_and_rejected_rows(
    console_client: ConsoleClient, console_app: FastAPI, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    form = await admin.get("/ui/imports")
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.text and 'name="on_conflict"' in form.text
    uploaded = await upload(admin, CSV)
    assert uploaded.status_code == 303, uploaded.text
    url = uploaded.headers["location"]
    import_id = int(re.search(r"/ui/imports/(\d+)", url)[1])  # type: ignore[index]
    await console_app.state.import_tasks.wait()

    page = await admin.get(f"/ui/imports/{import_id}")
    assert page.status_code == 200
    text = page.text
    assert re.search(r"Created</dt><dd[^>]*>2<", text) and re.search(
        r"Rejected</dt><dd[^>]*>3<", text
    )
    assert "duplicate of line 2" in text and "hx-trigger" not in text  # done: no more polling
    assert 'max="5" value="5"' in text  # the bar is full
    for line in ("4", "5", "6"):
        assert f'<td class="num">{line}</td>' in text
    csv = await admin.get(f"/ui/imports/{import_id}/rejected.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert (
        csv.text.splitlines()[0].startswith("line,field,reason") and len(csv.text.splitlines()) == 4
    )
    assert db.execute("SELECT phone, tag FROM client ORDER BY phone").fetchall() == [
        ("79160000001", "vip"),
        ("79160000002", ""),
    ]
    entry = db.execute(
        "SELECT actor_name, actor_kind, target_id FROM audit_log WHERE action = 'import_clients'"
    ).fetchall()
    assert entry == [("admin", "user", str(import_id))]
    listed = await admin.get("/ui/imports")
    assert f"/ui/imports/{import_id}" in listed.text

    # on_conflict=update replaces an existing client's fields; skip leaves them.
    again = await upload(admin, "phone,tag,timezone\n79160000002,gold,UTC\n", "update")
    assert again.status_code == 303
    await console_app.state.import_tasks.wait()
    assert db.execute("SELECT tag FROM client WHERE phone = '79160000002'").fetchone() == ("gold",)


async def test_a_running_import_shows_a_progress_bar_and_polls(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    db.execute(
        "INSERT INTO client_import (id, status, on_conflict, fingerprint, bytes, rows, actor)"
        " OVERRIDING SYSTEM VALUE VALUES (77, 'done', 'skip', 'x', 10, 3, 'ops')"
    )
    # A running import in another live process would hold its advisory lock; here, none does:
    # the page reads it as failed (the REST API's own rule), with nothing changed.
    db.execute(
        "INSERT INTO client_import (id, status, on_conflict, fingerprint, bytes, rows, actor)"
        " OVERRIDING SYSTEM VALUE VALUES (78, 'running', 'skip', 'y', 10, 3, 'ops')"
    )
    admin = await console_client("admin")
    page = (await admin.get("/ui/imports/78")).text
    assert "Failed; the directory was not changed." in page
    assert "the process running it stopped" in page


async def test_a_file_that_cannot_be_read_or_no_file_is_422_beside_the_field(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    bad = await upload(admin, "name,age\nx,1\n")
    assert bad.status_code == 422 and 'id="e-file"' in bad.text
    none = await admin.post(
        "/ui/imports",
        data={"csrf_token": admin.csrf_token, "on_conflict": "skip"},  # type: ignore[attr-defined]
        files={"file": ("", b"", "application/octet-stream")},
    )
    assert none.status_code == 422 and "Choose a CSV file." in none.text
    odd = await upload(admin, CSV, "replace")
    assert odd.status_code == 422 and "skip or update" in odd.text
    assert db.execute("SELECT count(*) FROM client").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


async def test_the_same_form_sent_twice_imports_once(
    console_client: ConsoleClient, console_app: FastAPI, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    first = await upload(admin, CSV, import_key="form-1")
    second = await upload(admin, CSV, import_key="form-1")
    assert first.headers["location"] == second.headers["location"]
    await console_app.state.import_tasks.wait()
    assert db.execute("SELECT count(*) FROM client_import").fetchone() == (1,)


async def test_htmx_upload_is_sent_to_the_import_page(
    console_client: ConsoleClient, console_app: FastAPI
) -> None:
    admin = await console_client("admin")
    response = await admin.post(
        "/ui/imports",
        data={"on_conflict": "skip"},
        files={"file": ("c.csv", CSV.encode(), "text/csv")},
        headers={"HX-Request": "true", "X-CSRF-Token": admin.csrf_token},  # type: ignore[attr-defined]
    )
    assert response.status_code == 204
    assert re.fullmatch(r"/ui/imports/\d+\?notice=uploaded", response.headers["HX-Redirect"])
    await console_app.state.import_tasks.wait()


async def test_the_viewer_sees_imports_and_audit_but_cannot_upload(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    viewer = await console_client("viewer")
    page = await viewer.get("/ui/imports")
    assert page.status_code == 200 and 'type="file"' not in page.text
    assert "you can look, not change" in page.text
    assert (await viewer.get("/ui/audit")).status_code == 200
    refused = await upload(viewer, CSV)
    assert refused.status_code == 403
    assert db.execute("SELECT count(*) FROM client_import").fetchone() == (0,)


async def test_an_upload_without_the_csrf_token_or_from_elsewhere_is_refused(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    files = {"file": ("c.csv", CSV.encode(), "text/csv")}
    no_token = await admin.post("/ui/imports", data={"on_conflict": "skip"}, files=files)
    assert no_token.status_code == 403
    elsewhere = await admin.post(
        "/ui/imports",
        data={"csrf_token": admin.csrf_token},  # type: ignore[attr-defined]
        files=files,
        headers={"Origin": "http://evil.test"},
    )
    assert elsewhere.status_code == 403
    assert db.execute("SELECT count(*) FROM client_import").fetchone() == (0,)


async def test_without_a_session_no_import_page_export_or_audit_is_shown(
    console_app: FastAPI, db: psycopg.Connection
) -> None:
    import httpx

    db.execute(
        "INSERT INTO client_import (id, status, on_conflict, fingerprint, bytes, rows)"
        " OVERRIDING SYSTEM VALUE VALUES (5, 'done', 'skip', 'x', 10, 1)"
    )
    db.execute(
        "INSERT INTO client_import_rejection (import_id, line, field, reason, phone)"
        " VALUES (5, 2, 'phone', 'bad', '79990001122')"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url="http://console.test"
    ) as anonymous:
        for path in ["/ui/imports", "/ui/imports/5", "/ui/imports/5/rejected.csv",
                     "/ui/imports/5/live", "/ui/audit"]:  # fmt: skip
            response = await anonymous.get(path)
            # Sent to sign in (here the provider is unreachable: its error page), never the page.
            assert response.status_code != 200, path
            assert "79990001122" not in response.text and "Sign out" not in response.text
        posted = await anonymous.post("/ui/imports", files={"file": ("c.csv", b"phone\n")})
        assert posted.status_code != 200
    assert db.execute("SELECT count(*) FROM client_import").fetchone() == (1,)


def add_entries(db: psycopg.Connection, n: int, **fields: str) -> None:
    actor = fields.get("actor", "ops")
    action = fields.get("action", "update")
    db.execute(
        "INSERT INTO audit_log (at, actor_name, actor_kind, actor_role, action, target_type,"
        " target_id, request_id, changes)"
        " SELECT now() - make_interval(mins => g), %s, 'token', 'admin', %s, 'mailing', g::text,"
        " 'req-' || g, jsonb_build_object('text', 'v' || g) FROM generate_series(1, %s) AS g",
        [actor, action, n],
    )


async def test_the_audit_log_filters_and_pages_with_the_filters_in_the_url(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    add_entries(db, 60, actor="ops", action="update")
    add_entries(db, 3, actor="ada", action="pause")
    admin = await console_client("admin")
    page = await admin.get("/ui/audit")
    assert page.status_code == 200 and page.text.count("<tr>") == 51  # header + a page of 50
    by_actor = (await admin.get("/ui/audit", params={"actor": "ada"})).text
    assert by_actor.count("<tr>") == 4 and 'title="pause"' in by_actor and "req-1" in by_actor
    by_action = await admin.get("/ui/audit", params={"action": "update", "target_type": "mailing"})
    nxt = re.search(r'rel="next" href="([^"]+)"', by_action.text)
    assert nxt is not None
    next_url = nxt[1].replace("&amp;", "&")
    assert (
        "action=update" in next_url and "target_type=mailing" in next_url and "before=" in next_url
    )
    second = (await admin.get(next_url)).text
    assert second.count("<tr>") == 11 and 'title="pause"' not in second  # the last 10, same filter
    target = (
        await admin.get("/ui/audit", params={"target_type": "mailing", "target_id": "2"})
    ).text
    assert target.count("<tr>") == 3  # ops' and ada's entries on mailing 2
    # Time range, read in the admin's zone (UTC here): only the last 2 minutes and a bit.
    since = db.execute("SELECT to_char(now() - interval '150 seconds', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
                       ).fetchone()[0]  # type: ignore[index]  # fmt: skip
    recent = (await admin.get("/ui/audit", params={"since": since})).text
    assert recent.count("<tr>") == 5  # minutes 1 and 2 of both actors
    bad = await admin.get("/ui/audit", params={"since": "yesterday"})
    assert bad.status_code == 200 and 'id="e-since"' in bad.text


async def test_console_changes_show_in_the_audit_page_by_the_signed_in_user(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 1)
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    saved = await admin.post(
        f"/ui/clients/{clients[0]}",
        data={"csrf_token": token, "phone": "79001112233", "timezone": "Asia/Tokyo"},
    )
    assert saved.status_code == 303, saved.text
    page = (await admin.get("/ui/audit", params={"actor": "admin"})).text
    assert f"/ui/clients/{clients[0]}" in page and ">replace<" in page
    assert "timezone: UTC → Asia/Tokyo" in page
    assert "79001112233" not in page  # phones masked, as in the API
