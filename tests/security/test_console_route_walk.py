"""Every console POST route, walked from the app's own route table (not a list kept by
hand), is refused for a viewer, without the CSRF token, and from another origin; and none of
those refusals changes a row. A viewer may only end its own sessions (/ui/auth/...) and search
by phone (a read sent as POST to keep the phone out of URLs), which still need the token. The
console's twin of tests/api/test_roles.py."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from tests.api.helpers import insert_clients, insert_mailing, insert_messages, start_mailing
from tests.security.console_rig import console_routes
from tests.support import database
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

OWN_SESSION = "/ui/auth/"  # sign out, end one's other sessions: any signed-in user may
# Reads sent as POST so that a phone stays out of the URL: a viewer may, with the CSRF token.
READS = {"/ui/clients/find"}


def every_row(db: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table; of the sessions, who holds which role (a refused request may
    still note when its session was last seen)."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
        ).fetchall()
    ]
    rows = {
        t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        for t in sorted(tables)
        if t != "console_session"
    }
    rows["console_session"] = db.execute(
        "SELECT id, login, role FROM console_session ORDER BY 1"
    ).fetchall()
    return rows


def form(csrf_token: str | None) -> dict[str, str]:
    """A form each route would act on if it let the request through."""
    fields = {
        "phone": "79001112233",
        "timezone": "UTC",
        "tag": "walked",
        "text": "Walked",
        "start_at": "2030-01-01T09:00",
        "end_at": "2030-01-02T09:00",
        "form_tz": "UTC",
        "session_id": "0" * 64,
    }
    return fields | ({"csrf_token": csrf_token} if csrf_token else {})


async def test_every_console_post_is_refused_without_role_token_or_origin(
    console_app: object, console_client: ConsoleClient, clean_db: str, subtests: pytest.Subtests
) -> None:
    with database.connect(clean_db) as db:
        clients = insert_clients(db, 2)
        running = insert_mailing(db)
        start_mailing(db, running)
        insert_messages(db, running, clients, "failed")
        ids = {"client_id": clients[0], "mailing_id": running}
        routes = console_routes(console_app, "POST")
        assert len(routes) >= 15, routes
        assert {"ui_client_create", "ui_mailing_delete", "ui_import_upload"} <= {
            name for _, name in routes
        }
        admin = await console_client("admin")
        viewer = await console_client("viewer")
        before = every_row(db)
        for template, name in routes:
            path = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), running)), template)
            with subtests.test(msg=name):
                if not template.startswith(OWN_SESSION) and template not in READS:
                    refused = await viewer.post(path, data=form(viewer.csrf_token))  # type: ignore[attr-defined]
                    assert refused.status_code == 403, (path, refused.status_code)
                    assert "may only read" in refused.text or "viewer" in refused.text
                no_token = await admin.post(path, data=form(None))
                assert no_token.status_code == 403, (path, no_token.status_code)
                wrong_token = await admin.post(path, data=form("not-the-session-token"))
                assert wrong_token.status_code == 403, (path, wrong_token.status_code)
                cross_site = await admin.post(
                    path,
                    data=form(admin.csrf_token),  # type: ignore[attr-defined]
                    headers={"Origin": "https://elsewhere.example"},
                )
                assert cross_site.status_code == 403, (path, cross_site.status_code)
        assert every_row(db) == before
