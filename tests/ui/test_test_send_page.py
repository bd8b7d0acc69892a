"""The mailing page's "Send test" form: the REST API's own service function behind it (same
refusals, same audit entry, same per-user limit), admins only, CSRF-checked, status shown."""

from __future__ import annotations

import psycopg
import pytest

from tests.api.helpers import insert_mailing
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

PHONE = "79161234567"


@pytest.fixture
def db(clean_db: str):
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


def stored_tests(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT mailing_id, phone, status FROM message WHERE is_test").fetchall()


async def test_an_admin_sends_a_test_and_sees_its_status(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="paused")
    admin = await console_client("admin")
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    assert "Send test" in page.text and "No test sends yet." in page.text

    token = admin.csrf_token  # type: ignore[attr-defined]
    sent = await admin.post(
        f"/ui/mailings/{mailing_id}/test", data={"csrf_token": token, "phone": PHONE}
    )
    assert sent.status_code == 303
    assert stored_tests(db) == [(mailing_id, PHONE, "pending")]
    after = await admin.get(sent.headers["location"], headers={"Accept-Language": "ru"})
    assert "Тестовая отправка принята" in after.text and PHONE in after.text
    # The list refreshes itself while the test is open, and stops once it is sent.
    fragment = await admin.get(f"/ui/mailings/{mailing_id}/tests")
    assert 'hx-trigger="every 1s"' in fragment.text and "pending" in fragment.text
    db.execute("UPDATE message SET status = 'sent', attempts = 1 WHERE is_test")
    fragment = await admin.get(f"/ui/mailings/{mailing_id}/tests")
    assert "hx-trigger" not in fragment.text and "sent" in fragment.text

    audit = db.execute("SELECT actor_name, actor_kind, action, changes FROM audit_log").fetchall()
    assert [(a[0], a[1], a[2], a[3]["phone"]) for a in audit if a[2] == "test_send"] == [
        ("admin", "user", "test_send", "7916*****67")
    ]


async def test_a_bad_phone_or_a_cancelled_mailing_is_refused_and_changes_nothing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    live = insert_mailing(db, status="running")
    cancelled = insert_mailing(db, status="cancelled")
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    bad = await admin.post(f"/ui/mailings/{live}/test", data={"csrf_token": token, "phone": "8"})
    assert bad.status_code == 422 and "phone must be 7 followed by 10 digits" in bad.text
    gone = await admin.post(
        f"/ui/mailings/{cancelled}/test", data={"csrf_token": token, "phone": PHONE}
    )
    assert gone.status_code == 409 and "cancelled" in gone.text
    assert "Send test" not in (await admin.get(f"/ui/mailings/{cancelled}")).text
    assert stored_tests(db) == []
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'test_send'").fetchone() == (
        0,
    )


async def test_the_viewer_sees_tests_but_cannot_send_one_and_csrf_is_checked(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="running")
    viewer = await console_client("viewer")
    page = await viewer.get(f"/ui/mailings/{mailing_id}")
    assert page.status_code == 200 and "Test sends" in page.text and "Send test" not in page.text
    forged = await viewer.post(
        f"/ui/mailings/{mailing_id}/test",
        data={"csrf_token": viewer.csrf_token, "phone": PHONE},  # type: ignore[attr-defined]
    )
    assert forged.status_code == 403
    admin = await console_client("admin")
    no_csrf = await admin.post(f"/ui/mailings/{mailing_id}/test", data={"phone": PHONE})
    assert no_csrf.status_code == 403
    assert stored_tests(db) == []
