"""Frequency caps in the REST API (issue 21): `transactional` and `frequency_cap` on a
mailing, the pre-send check's `recipients.over_cap`, the audit, and the reason in the
messages list. What the fan-out and the claim do is in tests/db/test_frequency_caps.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from shared.domain.frequency_cap import FREQUENCY_CAP_REASON
from shared.settings import ApiSettings
from tests.api.helpers import (
    assert_error,
    insert_clients,
    insert_mailing,
    insert_messages,
    mailing_body,
    start_mailing,
    unchanged,
)
from tests.conftest import ADMIN_TOKEN

GLOBAL_CAP = "1/24h"


@pytest.fixture(scope="module")
async def capped_app(api_settings: ApiSettings) -> AsyncIterator[object]:
    app = create_app(api_settings.model_copy(update={"frequency_cap": GLOBAL_CAP}))
    async with LifespanManager(app) as manager:
        yield manager.app


@pytest.fixture
async def admin(capped_app: object, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=capped_app),  # type: ignore[arg-type]
        base_url="http://api.test/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client


def _audit(db: psycopg.Connection, mailing_id: int) -> list[tuple[str, Any]]:
    return db.execute(
        "SELECT action, changes FROM audit_log"
        " WHERE target_type = 'mailing' AND target_id = %s ORDER BY id",
        (str(mailing_id),),
    ).fetchall()


def test_the_setting_is_read_in_its_canonical_form() -> None:
    assert ApiSettings(frequency_cap=" 5/7d, 2/24h").frequency_cap == "2/24h,5/7d"
    assert ApiSettings(frequency_cap="").frequency_cap is None
    with pytest.raises(ValueError, match="N/<period>"):
        ApiSettings(frequency_cap="2 per day")


async def test_the_check_counts_clients_at_the_cap(
    admin: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 5)
    earlier = insert_mailing(db, status="running")
    insert_messages(db, earlier, clients[:3], status="sent")  # sent now: at 1/24h
    db.execute("UPDATE client SET opted_out_at = now() WHERE id = %s", [clients[0]])
    body = mailing_body()
    with unchanged(db):
        check = (await admin.post("/mailings/check", json=body)).json()
    # The opted-out one counts as opted out only.
    assert check["recipients"] == {"matching": 5, "opted_out": 1, "over_cap": 2, "final": 2}
    assert check["text"]["total_segments"] == 2
    own = (await admin.post("/mailings/check", json={**body, "frequency_cap": "2/24h"})).json()
    assert own["recipients"]["over_cap"] == 0
    receipt = (await admin.post("/mailings/check", json={**body, "transactional": True})).json()
    assert receipt["recipients"] == {"matching": 5, "opted_out": 1, "over_cap": 0, "final": 4}


async def test_a_mailing_takes_its_own_cap_and_transactional_flag(
    admin: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    created = await admin.post("/mailings", json=mailing_body(frequency_cap=" 2/24h , 1/90m "))
    assert created.status_code == 201, created.text
    mailing = created.json()
    assert mailing["frequency_cap"] == "1/90m,2/24h" and mailing["transactional"] is False
    assert "over_cap" in mailing["check"]["recipients"]
    create_audit = _audit(db, mailing["id"])[0]
    assert create_audit[0] == "create"
    assert create_audit[1]["frequency_cap"] == "1/90m,2/24h"
    assert create_audit[1]["transactional"] is False

    patched = await admin.patch(
        f"/mailings/{mailing['id']}", json={"frequency_cap": None, "transactional": True}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["frequency_cap"] is None and patched.json()["transactional"] is True
    update = _audit(db, mailing["id"])[-1][1]
    assert update["frequency_cap"] == {"old": "1/90m,2/24h", "new": None}
    assert update["transactional"] == {"old": False, "new": True}

    # Started: the cap may still change (it holds for messages not yet sent), the flag not.
    start_mailing(db, mailing["id"])
    lowered = await admin.patch(f"/mailings/{mailing['id']}", json={"frequency_cap": "1/7d"})
    assert lowered.status_code == 200 and lowered.json()["frequency_cap"] == "1/7d"
    with unchanged(db):
        assert_error(
            await admin.patch(f"/mailings/{mailing['id']}", json={"transactional": False}),
            409,
            "transactional",
        )
    clone = await admin.post(
        f"/mailings/{mailing['id']}/clone",
        json={"start_at": mailing_body()["start_at"], "end_at": mailing_body()["end_at"]},
    )
    assert clone.status_code == 201, clone.text
    assert clone.json()["frequency_cap"] == "1/7d" and clone.json()["transactional"] is True


@pytest.mark.parametrize("bad", ["2", "2/24w", "0/1h", "1/400d", "two/24h", ""])
async def test_a_bad_cap_is_422_and_changes_nothing(
    admin: httpx.AsyncClient, db: psycopg.Connection, bad: str
) -> None:
    with unchanged(db):
        assert_error(await admin.post("/mailings", json=mailing_body(frequency_cap=bad)), 422)
        assert_error(await admin.post("/mailings/check", json={"frequency_cap": bad}), 422)
    assert_error(
        await admin.post("/mailings", json=mailing_body(transactional="maybe")), 422, "transact"
    )


async def test_the_messages_list_says_a_message_was_capped(
    admin: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 1)
    mailing_id = insert_mailing(db, status="running")
    db.execute(
        "INSERT INTO message (mailing_id, client_id, status, last_error)"
        " VALUES (%s, %s, 'cancelled', %s)",
        [mailing_id, clients[0], FREQUENCY_CAP_REASON],
    )
    listed = (await admin.get(f"/mailings/{mailing_id}/messages")).json()
    assert [(m["status"], m["last_error"]) for m in listed["items"]] == [
        ("cancelled", "frequency cap")
    ]


async def test_an_idempotency_key_tells_bodies_apart_by_their_cap(
    admin: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body(frequency_cap="2/24h")
    key = {"Idempotency-Key": "caps-1"}
    first = await admin.post("/mailings", json=body, headers=key)
    again = await admin.post("/mailings", json=body, headers=key)
    assert first.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = await admin.post("/mailings", json={**body, "frequency_cap": "1/24h"}, headers=key)
    assert_error(other, 422, "Idempotency-Key")
