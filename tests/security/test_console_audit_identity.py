"""The audit log names a console user by what the user cannot change, the identity
provider's `sub` and issuer; the login stays beside it for display. Two logins of one
subject (a renamed account) are one identity; one login of two subjects (a name taken over)
are two."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from services.api.principal import Role
from services.api.ui.auth import store
from services.api.ui.deps import SESSION_COOKIE
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.ui.pages_fixtures import BASE_URL, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]


async def signed_in(app: FastAPI, subject: str, login: str) -> httpx.AsyncClient:
    async with app.state.session_factory() as db:
        token, user = await store.create(
            db,
            store.Identity(subject=subject, login=login, name=login.title(), email=""),
            Role.ADMIN,
            id_token=None,
            lifetimes=store.Lifetimes(idle=timedelta(hours=1), absolute=timedelta(hours=2)),
            now=datetime.now(UTC),
        )
        await db.commit()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        cookies={SESSION_COOKIE: token},
        headers={"Origin": BASE_URL},
    )
    client.csrf_token = user.csrf_token  # type: ignore[attr-defined]
    return client


async def create_client(client: httpx.AsyncClient, phone: str) -> None:
    response = await client.post(
        "/ui/clients",
        data={"csrf_token": client.csrf_token, "phone": phone, "timezone": "UTC", "tag": ""},  # type: ignore[attr-defined]
    )
    assert response.status_code == 303, response.text


async def test_console_changes_are_audited_by_subject_and_issuer(
    console_app: FastAPI, console_settings: ApiSettings, clean_db: str
) -> None:
    issuer = console_settings.oidc_issuer
    ada = await signed_in(console_app, "sub-0001", "ada")
    renamed = await signed_in(console_app, "sub-0001", "ada.lovelace")  # the same account
    usurper = await signed_in(console_app, "sub-0002", "ada")  # another account, same login
    async with ada, renamed, usurper:
        await create_client(ada, "79001110001")
        await create_client(renamed, "79001110002")
        await create_client(usurper, "79001110003")
        with database.connect(clean_db) as db:
            rows = db.execute(
                "SELECT actor_name, actor_subject, actor_issuer FROM audit_log"
                " WHERE action = 'create' AND target_type = 'client' ORDER BY id"
            ).fetchall()
        assert [tuple(row) for row in rows] == [
            ("ada", "sub-0001", issuer),
            ("ada.lovelace", "sub-0001", issuer),
            ("ada", "sub-0002", issuer),
        ]
        # The REST API shows both; the console's audit page still shows the name.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=console_app),
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api:
            entries = (await api.get("/api/v1/audit", params={"action": "create"})).json()
        actors = [entry["actor"] for entry in reversed(entries["items"])]
        assert actors[0] == {
            "name": "ada", "kind": "user", "role": "admin", "subject": "sub-0001", "issuer": issuer
        }  # fmt: skip
        assert [a["subject"] for a in actors] == ["sub-0001", "sub-0001", "sub-0002"]
        page = await ada.get("/ui/audit")
        assert page.status_code == 200 and "ada.lovelace" in page.text
        assert "sub-0001" not in page.text  # the page shows people's names


async def test_tokens_have_no_subject(console_app: FastAPI, clean_db: str) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as api:
        created = await api.post(
            "/api/v1/clients", json={"phone": "79001110009", "timezone": "UTC", "tag": ""}
        )
        assert created.status_code == 201, created.text
    with database.connect(clean_db) as db:
        row = db.execute(
            "SELECT actor_kind, actor_subject, actor_issuer FROM audit_log ORDER BY id DESC"
        ).fetchone()
    assert tuple(row or ()) == ("token", None, None)
