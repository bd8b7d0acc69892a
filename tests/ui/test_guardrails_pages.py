"""The console's guardrails: the pre-send check live in the mailing form, the Approve button
and the dashboard's mailings awaiting approval, in English and Russian."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI

from tests.api.helpers import insert_clients, insert_mailing
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection]:
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


@pytest.fixture
def threshold(console_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(console_app.state.settings, "approval_threshold", 2)
    return 2


def awaiting(db: psycopg.Connection, created_by: str) -> int:
    mailing_id = insert_mailing(db, status="awaiting_approval", text="big one")
    db.execute("UPDATE mailing SET created_by = %s WHERE id = %s", (created_by, mailing_id))
    return mailing_id


async def test_the_form_shows_the_check_as_the_fields_change(
    console_client: ConsoleClient, db: psycopg.Connection, threshold: int
) -> None:
    insert_clients(db, 3, operator_code="912")
    insert_clients(db, 1, first=10, operator_code="916")
    admin = await console_client("admin")
    form = await admin.get("/ui/mailings/new")
    assert re.search(r'hx-get="[^"]*/ui/mailings-check"', form.text)
    assert "input changed delay:400ms" in form.text
    fields = {
        "text": "Привет",
        "start_at": "2030-01-01T09:00",
        "end_at": "2030-01-02T09:00",
        "tz": "UTC",
        "operator_codes": "912",
        "tags": "",
        "window_start": "",
        "window_end": "",
    }
    check = await admin.get("/ui/mailings-check", params=fields)
    assert check.status_code == 200
    assert re.search(r'data-testid="check-final">3<', check.text)
    assert "UCS-2, 1 per message, 3 in all" in check.text
    assert "Over the approval threshold (2 recipients)" in check.text
    russian = await admin.get(
        "/ui/mailings-check", params=fields, headers={"Accept-Language": "ru"}
    )
    assert "Получат" in russian.text and "Больше порога одобрения" in russian.text
    narrow = await admin.get("/ui/mailings-check", params={**fields, "operator_codes": "916"})
    assert re.search(r'data-testid="check-final">1<', narrow.text)
    assert "approval threshold" not in narrow.text
    bad = await admin.get("/ui/mailings-check", params={**fields, "window_start": "09:00"})
    assert 'class="error"' in bad.text


async def test_another_admin_approves_from_the_mailing_page(
    console_client: ConsoleClient, db: psycopg.Connection, threshold: int
) -> None:
    insert_clients(db, 3)
    admin = await console_client("admin")
    mailing_id = awaiting(db, created_by="someone-else")
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    assert "Awaiting approval" in page.text and "someone-else" in page.text
    assert f'/ui/mailings/{mailing_id}/approve"' in page.text
    dashboard = await admin.get("/ui/")
    assert "Awaiting approval" in dashboard.text and f"/ui/mailings/{mailing_id}" in dashboard.text
    assert re.search(r'data-testid="check-final">3<', dashboard.text)
    russian = await admin.get("/ui/", headers={"Accept-Language": "ru"})
    assert "Ждут одобрения" in russian.text

    approved = await admin.post(
        f"/ui/mailings/{mailing_id}/approve",
        data={"csrf_token": admin.csrf_token},  # type: ignore[attr-defined]
    )
    assert approved.status_code == 303, approved.text
    assert "notice=approved" in approved.headers["location"]
    row = db.execute("SELECT status, approved_by FROM mailing WHERE id = %s", (mailing_id,))
    assert row.fetchone() == ("scheduled", "admin")
    assert "Approved by admin" in (await admin.get(f"/ui/mailings/{mailing_id}")).text
    assert "Awaiting approval" not in (await admin.get("/ui/")).text


async def test_the_creator_sees_no_approve_button_and_a_forged_post_is_refused(
    console_client: ConsoleClient, db: psycopg.Connection, threshold: int
) -> None:
    admin = await console_client("admin")
    mailing_id = awaiting(db, created_by="admin")
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    assert "another admin must approve it" in page.text
    assert f'/ui/mailings/{mailing_id}/approve"' not in page.text
    forged = await admin.post(
        f"/ui/mailings/{mailing_id}/approve",
        data={"csrf_token": admin.csrf_token},  # type: ignore[attr-defined]
    )
    assert forged.status_code == 403
    row = db.execute("SELECT status FROM mailing WHERE id = %s", (mailing_id,)).fetchone()
    assert row == ("awaiting_approval",)


async def test_a_mailing_created_in_the_console_over_the_threshold_waits(
    console_client: ConsoleClient, db: psycopg.Connection, threshold: int
) -> None:
    insert_clients(db, 3)
    admin = await console_client("admin")
    created = await admin.post(
        "/ui/mailings",
        data={
            "csrf_token": admin.csrf_token,  # type: ignore[attr-defined]
            "text": "Hello",
            "start_at": "2030-01-01T09:00",
            "end_at": "2030-01-02T09:00",
            "tz": "UTC",
        },
    )
    assert created.status_code == 303, created.text
    row = db.execute("SELECT status, created_by FROM mailing").fetchone()
    assert row == ("awaiting_approval", "admin")
