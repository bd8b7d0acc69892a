"""Every console page answers from counters and keyset queries, never a scan of `message` or
`client` (the tables that hold millions of rows): each SQL statement a page runs is EXPLAINed
with sequential scans disabled, so a `Seq Scan` left in a plan is one no index can serve.

(On a test's tiny tables the planner would scan anyway; `enable_seqscan = off` asks whether an
index plan exists. The page times with 1,000 mailings and a million clients are measured by
`bench/console_pages.py` and written in docs/BENCHMARKS.md.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.api.helpers import insert_clients, insert_mailing, insert_messages
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

BIG_TABLES = ("message", "client")
# `message` is partitioned by mailing id (migration 0007): a scan names a partition.
_SCANNED = re.compile(r"Seq Scan on (message(?:_legacy|_p\d+)?|client)\b")


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection]:
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


@pytest.fixture
def statements(console_app: FastAPI) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    engine = console_app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def scans(db: psycopg.Connection, statement: str, parameters: Any) -> list[str]:
    """The big tables this statement would read whole (sequential scans on)."""
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + statement, parameters))
    scanned = {m.group(1).split("_")[0] for m in _SCANNED.finditer(plan)}
    return [table for table in BIG_TABLES if table in scanned]


async def test_no_page_scans_message_or_client(
    console_client: ConsoleClient, db: psycopg.Connection, statements: list[tuple[str, Any]]
) -> None:
    clients = insert_clients(db, 20, timezone="Europe/Moscow", tag="vip")
    running = insert_mailing(db, status="running", text="Скидка")
    db.execute(
        "UPDATE mailing SET send_window_start = '09:00', send_window_end = '21:00' WHERE id = %s",
        [running],
    )
    insert_messages(db, running, clients[:10], status="sent")
    insert_messages(db, running, clients[10:15], status="retrying")
    insert_messages(db, running, clients[15:], status="pending")
    db.execute("ANALYZE")
    # The check itself: a filter no index serves is caught.
    assert scans(db, "SELECT id FROM message WHERE last_error = %(e)s", {"e": "x"}) == ["message"]
    admin = await console_client("admin")
    pages = [
        "/ui/",
        "/ui/dashboard/live",
        "/ui/dashboard/rate.json",
        "/ui/mailings",
        "/ui/mailings?status=running",
        "/ui/mailings?order=oldest",
        f"/ui/mailings/{running}",
        f"/ui/mailings/{running}/live",
        f"/ui/mailings/{running}?msg_status=pending",
        f"/ui/mailings/{running}?msg_after=3",
        f"/ui/mailings/{running}/edit",
        "/ui/mailings-preview?operator_codes=912&tags=vip",
        "/ui/clients",
        "/ui/clients?tag=vip",
        "/ui/clients?operator_code=912",
        f"/ui/clients?after={clients[5]}",
        f"/ui/clients/{clients[0]}",
        "/ui/imports",
        "/ui/audit",
        "/ui/audit?actor=admin&action=update",
    ]
    found: dict[str, list[str]] = {}
    checked = 0
    # The phone search is a POST (a phone stays out of URLs): it redirects to the client.
    finds = {"/ui/clients/find": {"phone": str(79120000000 + 5), "csrf_token": admin.csrf_token}}  # type: ignore[attr-defined]
    for path in [*pages, *finds]:
        statements.clear()
        if path in finds:
            response = await admin.post(path, data=finds[path])
            assert response.status_code == 303, path
        else:
            response = await admin.get(path)
            assert response.status_code == 200, path
        assert statements, path
        for statement, parameters in statements:
            if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
                checked += 1
                for table in scans(db, statement, parameters):
                    found.setdefault(path, []).append(f"{table}: {statement[:200]}")
    assert not found, found
    assert checked > 60  # the pages did run their queries (and they were all looked at)
