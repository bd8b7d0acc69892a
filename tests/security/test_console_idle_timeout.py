"""The idle timeout counts a person's requests only: the fragments a page polls by itself
(htmx's `every 1s`, the chart's data) neither keep the session alive nor, once it has ended,
send the tab off to sign in again unattended (single sign-on would make a new session)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest

from services.api.ui.auth.store import TOUCH_EVERY, session_id
from services.api.ui.deps import SESSION_COOKIE
from tests.api.helpers import insert_mailing, start_mailing
from tests.support import database
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

TEMPLATES = database.ROOT / "services" / "api" / "ui" / "templates"


def polled_route_names() -> set[str]:
    """The routes the templates poll (`hx-get="{{ url_for('name'...) }}" ... every Ns`)."""
    names = set()
    for template in TEMPLATES.rglob("*.html"):
        for tag in re.findall(r"<[^>]*hx-trigger=\"every [^>]*>", template.read_text()):
            names.update(re.findall(r"url_for\('(\w+)'", tag))
    return names


def sid(client: httpx.AsyncClient) -> str:
    return session_id(client.cookies[SESSION_COOKIE])


def last_seen(db_name: str, client: httpx.AsyncClient) -> datetime:
    with database.connect(db_name) as db:
        row = db.execute(
            "SELECT last_seen_at FROM console_session WHERE id = %s", [sid(client)]
        ).fetchone()
    assert row is not None
    return row[0]


def set_last_seen(db_name: str, client: httpx.AsyncClient, ago: timedelta) -> datetime:
    with database.connect(db_name) as db:
        row = db.execute(
            "UPDATE console_session SET last_seen_at = now() - %s WHERE id = %s"
            " RETURNING last_seen_at",
            [ago, sid(client)],
        ).fetchone()
    assert row is not None
    return row[0]


async def test_polled_fragments_do_not_refresh_the_idle_timeout(
    console_client: ConsoleClient, clean_db: str
) -> None:
    assert polled_route_names() >= {"ui_dashboard_live", "ui_mailing_live", "ui_import_live"}
    with database.connect(clean_db) as db:
        mailing = insert_mailing(db)
        start_mailing(db, mailing)
    viewer = await console_client("viewer")
    polled = [
        "/ui/dashboard/live",
        "/ui/dashboard/rate.json",
        f"/ui/mailings/{mailing}/live",
        f"/ui/mailings/{mailing}/tests",
    ]
    seen = set_last_seen(clean_db, viewer, 2 * TOUCH_EVERY)
    for path in polled:
        response = await viewer.get(path, headers={"HX-Request": "true"})
        assert response.status_code == 200, path
    assert last_seen(clean_db, viewer) == seen  # the polls kept nothing alive
    assert (await viewer.get("/ui/mailings")).status_code == 200  # a person's request
    assert last_seen(clean_db, viewer) > seen


async def test_an_idle_session_ends_although_the_page_polls(
    console_client: ConsoleClient, console_settings: object, clean_db: str
) -> None:
    viewer = await console_client("viewer")
    idle = timedelta(seconds=console_settings.ui_session_idle_s)  # type: ignore[attr-defined]
    set_last_seen(clean_db, viewer, idle - timedelta(seconds=5))
    assert (
        await viewer.get("/ui/dashboard/live", headers={"HX-Request": "true"})
    ).status_code == 200
    set_last_seen(clean_db, viewer, idle + timedelta(seconds=1))
    ended = await viewer.get(
        "/ui/dashboard/live",
        headers={"HX-Request": "true", "HX-Current-URL": "http://console.test/ui/"},
    )
    assert ended.status_code == 286  # htmx stops polling, and swaps in the notice
    assert "HX-Redirect" not in ended.headers
    assert "session has ended" in ended.text and "/ui/auth/login?next=%2Fui%2F" in ended.text
    # A person's request is still sent to sign in.
    page = await viewer.get("/ui/mailings", headers={"HX-Request": "true"})
    assert page.status_code == 401 and "HX-Redirect" in page.headers


@pytest.mark.parametrize("path", ["/ui/", "/ui/mailings"])
async def test_a_persons_request_still_counts(
    console_client: ConsoleClient, clean_db: str, path: str
) -> None:
    admin = await console_client("admin")
    seen = set_last_seen(clean_db, admin, 2 * TOUCH_EVERY)
    assert (await admin.get(path)).status_code == 200
    assert last_seen(clean_db, admin) > seen
