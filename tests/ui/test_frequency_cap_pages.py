"""The console's frequency caps: the form's Transactional and Frequency cap fields (create,
edit, after the start), the check's over-cap figure, the mailing page and the messages list's
reason, in English and Russian."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI

from tests.api.helpers import insert_clients, insert_mailing, insert_messages, start_mailing
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

FIELDS = {
    "text": "Hello",
    "start_at": "2030-01-01T09:00",
    "end_at": "2030-01-02T09:00",
    "tz": "UTC",
    "operator_codes": "",
    "tags": "",
    "window_start": "",
    "window_end": "",
}


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection]:
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


@pytest.fixture
def global_cap(console_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(console_app.state.settings, "frequency_cap", "1/24h")
    return "1/24h"


async def test_the_form_takes_a_cap_and_the_check_counts_it(
    console_client: ConsoleClient, db: psycopg.Connection, global_cap: str
) -> None:
    clients = insert_clients(db, 3)
    earlier = insert_mailing(db, status="running")
    insert_messages(db, earlier, clients[:2], status="sent")
    admin = await console_client("admin")
    form = await admin.get("/ui/mailings/new")
    assert 'name="frequency_cap"' in form.text and 'name="transactional"' in form.text
    assert "Empty: the global setting (1/24h)" in form.text
    russian = await admin.get("/ui/mailings/new", headers={"Accept-Language": "ru"})
    assert "Лимит частоты" in russian.text and "Транзакционная" in russian.text

    check = await admin.get("/ui/mailings-check", params=FIELDS)
    assert re.search(r"Over the frequency cap</dt><dd class=\"num\">2<", check.text)
    assert re.search(r'data-testid="check-final">1<', check.text)
    receipt = await admin.get("/ui/mailings-check", params={**FIELDS, "transactional": "on"})
    assert re.search(r'data-testid="check-final">3<', receipt.text)
    bad = await admin.get("/ui/mailings-check", params={**FIELDS, "frequency_cap": "2 a day"})
    assert 'class="error"' in bad.text and "N/&lt;period&gt;" in bad.text

    refused = await admin.post(
        "/ui/mailings",
        data={"csrf_token": admin.csrf_token, **FIELDS, "frequency_cap": "2/1w"},  # type: ignore[attr-defined]
    )
    assert refused.status_code == 422 and 'id="e-frequency_cap"' in refused.text
    assert db.execute("SELECT count(*) FROM mailing").fetchone() == (1,)
    created = await admin.post(
        "/ui/mailings",
        data={"csrf_token": admin.csrf_token, **FIELDS, "frequency_cap": "5/7d, 2/24h"},  # type: ignore[attr-defined]
    )
    assert created.status_code == 303, created.text
    row = db.execute(
        "SELECT id, frequency_cap, transactional FROM mailing WHERE id <> %s", (earlier,)
    ).fetchone()
    assert row is not None and row[1:] == ("2/24h,5/7d", False)
    page = await admin.get(f"/ui/mailings/{row[0]}")
    assert "2/24h,5/7d (this mailing&#39;s own)" in page.text


async def test_after_the_start_the_cap_may_change_and_transactional_not(
    console_client: ConsoleClient, db: psycopg.Connection, global_cap: str
) -> None:
    clients = insert_clients(db, 1)
    mailing_id = insert_mailing(db, status="scheduled")
    start_mailing(db, mailing_id)
    db.execute(
        "INSERT INTO message (mailing_id, client_id, status, last_error)"
        " VALUES (%s, %s, 'cancelled', 'frequency cap')",
        (mailing_id, clients[0]),
    )
    admin = await console_client("admin")
    form = await admin.get(f"/ui/mailings/{mailing_id}/edit")
    assert re.search(r'id="f-transactional"[^>]*disabled', form.text, re.S)
    assert not re.search(r'id="f-frequency_cap"[^>]*disabled', form.text, re.S)
    saved = await admin.post(
        f"/ui/mailings/{mailing_id}/edit",
        data={
            "csrf_token": admin.csrf_token,  # type: ignore[attr-defined]
            **FIELDS,
            "end_at": "2031-01-02T09:00",
            "frequency_cap": "1/7d",
            "transactional": "on",  # forged: a started mailing's flag is fixed
        },
    )
    assert saved.status_code == 303, saved.text
    row = db.execute(
        "SELECT frequency_cap, transactional FROM mailing WHERE id = %s", (mailing_id,)
    ).fetchone()
    assert row == ("1/7d", False)
    page = await admin.get(f"/ui/mailings/{mailing_id}", headers={"Accept-Language": "ru"})
    assert "лимит частоты" in page.text
