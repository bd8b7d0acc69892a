"""`POST /mailings/{id}/test`: one test message to one phone, readable by id, counted nowhere in
the mailing's statistics, audited, and limited per token (in the database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.api.helpers import (
    assert_error,
    create_client,
    create_mailing,
    insert_clients,
    insert_messages,
    start_mailing,
    unchanged,
)
from tests.conftest import ADMIN_TOKEN

PHONE = "79161234567"


def audit_rows(db: psycopg.Connection, action: str = "test_send") -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT actor_name, target_type, target_id, changes FROM audit_log WHERE action = %s"
        " ORDER BY id",
        (action,),
    ).fetchall()


def audit_count(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM audit_log").fetchone()[0]  # type: ignore[index]


async def test_a_test_send_is_accepted_readable_and_counted_nowhere(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api, text="Скидка 20%")  # scheduled: starts in an hour
    mid = mailing["id"]
    stats_before = (await api.get(f"/mailings/{mid}/stats")).json()

    response = await api.post(f"/mailings/{mid}/test", json={"phone": PHONE})
    assert response.status_code == 202, response.text
    test = response.json()
    assert test["mailing_id"] == mid and test["phone"] == PHONE
    assert test["status"] == "pending" and test["attempts"] == 0
    assert test["deadline"] > test["created_at"]
    location = response.headers["Location"]
    assert location == f"/api/v1/mailings/{mid}/tests/{test['id']}"

    read = await api.get(location.removeprefix("/api/v1"))
    assert read.status_code == 200 and read.json()["id"] == test["id"]
    listed = (await api.get(f"/mailings/{mid}/tests")).json()
    assert [t["id"] for t in listed["items"]] == [test["id"]] and listed["next_after_id"] is None

    # Not one of the mailing's messages, in no counter, the mailing itself untouched.
    assert (await api.get(f"/mailings/{mid}/messages")).json()["items"] == []
    assert (await api.get(f"/mailings/{mid}/stats")).json() == stats_before
    assert db.execute("SELECT count(*) FROM message_count WHERE count <> 0").fetchone() == (0,)
    assert (await api.get(f"/mailings/{mid}")).json()["status"] == "scheduled"

    # The audit entry: who, which mailing, which message, the phone masked.
    assert audit_rows(db) == [
        ("token-1", "mailing", str(mid), {"message_id": test["id"], "phone": "7916*****67"})
    ]


async def test_reading_tests_of_another_mailing_or_a_regular_message_is_404(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    one = (await create_mailing(api))["id"]
    other = (await create_mailing(api))["id"]
    start_mailing(db, other)
    regular = insert_messages(db, other, insert_clients(db, 1))[0]
    test = (await api.post(f"/mailings/{one}/test", json={"phone": PHONE})).json()
    assert_error(await api.get(f"/mailings/{other}/tests/{test['id']}"), 404, "test message")
    assert_error(await api.get(f"/mailings/{other}/tests/{regular}"), 404, "test message")
    assert (await api.get(f"/mailings/{other}/tests")).json()["items"] == []
    assert_error(await api.get(f"/mailings/{one + other}/tests"), 404, "mailing")


@pytest.mark.parametrize(
    "body",
    [
        {"phone": "89161234567"},
        {"phone": "7916123456"},
        {"phone": 79161234567},
        {"phone": PHONE, "text": "another text"},
        {},
    ],
)
async def test_a_bad_phone_is_422_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, body: dict[str, Any]
) -> None:
    mid = (await create_mailing(api))["id"]
    audited = audit_count(db)
    with unchanged(db):
        assert_error(await api.post(f"/mailings/{mid}/test", json=body), 422)
    assert audit_count(db) == audited


async def test_unknown_deleted_and_cancelled_mailings_and_opted_out_phones_are_refused(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    deleted = (await create_mailing(api))["id"]
    assert (await api.delete(f"/mailings/{deleted}")).status_code == 204
    cancelled = (await create_mailing(api))["id"]
    assert (await api.post(f"/mailings/{cancelled}/cancel")).status_code == 200
    live = (await create_mailing(api))["id"]
    await create_client(api, phone=PHONE, opted_out=True)
    audited = audit_count(db)
    with unchanged(db):
        body = {"phone": "79160000001"}
        assert_error(await api.post(f"/mailings/{live + 100}/test", json=body), 404, "mailing")
        assert_error(await api.post(f"/mailings/{deleted}/test", json=body), 404, "mailing")
        assert_error(await api.post(f"/mailings/{cancelled}/test", json=body), 409, "cancelled")
        refused = await api.post(f"/mailings/{live}/test", json={"phone": PHONE})
        assert_error(refused, 409, "opted out", "7916*****67")
    assert audit_count(db) == audited


async def test_retry_failed_leaves_failed_tests_alone(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mid = (await create_mailing(api))["id"]
    start_mailing(db, mid)
    test = (await api.post(f"/mailings/{mid}/test", json={"phone": PHONE})).json()
    db.execute("UPDATE message SET status = 'failed' WHERE id = %s", (test["id"],))
    assert (await api.post(f"/mailings/{mid}/retry-failed")).json()["retried"] == 0
    assert (await api.get(f"/mailings/{mid}/tests/{test['id']}")).json()["status"] == "failed"


@pytest.fixture
async def limited(
    api_settings: ApiSettings, clean_db: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of an app allowing 2 test sends a minute: admin `token-1` and admin `token-2`."""
    app = create_app(api_settings.model_copy(update={"test_sends_per_minute": 2}), NoEvents())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)  # type: ignore[arg-type]
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://api.test/api/v1",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as first,
            httpx.AsyncClient(
                transport=transport,
                base_url="http://api.test/api/v1",
                headers={"Authorization": "Bearer second-token"},
            ) as second,
        ):
            yield first, second


async def test_more_than_the_limit_per_minute_is_429_with_retry_after(
    limited: tuple[httpx.AsyncClient, httpx.AsyncClient], db: psycopg.Connection
) -> None:
    first, second = limited
    mid = (await create_mailing(first))["id"]
    for _ in range(2):
        assert (await first.post(f"/mailings/{mid}/test", json={"phone": PHONE})).status_code == 202
    audited = audit_count(db)
    with unchanged(db):
        refused = await first.post(f"/mailings/{mid}/test", json={"phone": PHONE})
        assert_error(refused, 429, "at most 2 test sends per minute", "token-1")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert audit_count(db) == audited

    # The budget is the token's: another token still has its own.
    assert (await second.post(f"/mailings/{mid}/test", json={"phone": PHONE})).status_code == 202
    # Once the minute has passed (the entries are a minute old), the first may send again.
    db.execute("UPDATE audit_log SET at = at - interval '61 seconds' WHERE actor_name = 'token-1'")
    assert (await first.post(f"/mailings/{mid}/test", json={"phone": PHONE})).status_code == 202


async def test_concurrent_requests_never_exceed_the_limit(
    limited: tuple[httpx.AsyncClient, httpx.AsyncClient], db: psycopg.Connection
) -> None:
    """The count is taken under a per-token lock in the database, as api replicas would race."""
    first, _ = limited
    mid = (await create_mailing(first))["id"]
    answers = await asyncio.gather(
        *(first.post(f"/mailings/{mid}/test", json={"phone": PHONE}) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [202, 202, 429, 429, 429, 429]
    assert len(audit_rows(db)) == 2
    assert db.execute("SELECT count(*) FROM message WHERE is_test").fetchone() == (2,)


async def test_a_mailing_whose_partition_retention_dropped_can_still_be_tested(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """Retention drops a finished block's partition; testing one of its mailings months later
    makes the partition again instead of failing the insert."""
    mid = (await create_mailing(api))["id"]
    (partition,) = db.execute("SELECT message_partition_of(%s)::text", (mid,)).fetchone()  # type: ignore[misc]
    assert partition is not None
    db.execute(f"ALTER TABLE message DETACH PARTITION {partition}")
    db.execute(f"DROP TABLE {partition}")
    assert db.execute("SELECT message_partition_of(%s)", (mid,)).fetchone() == (None,)

    response = await api.post(f"/mailings/{mid}/test", json={"phone": PHONE})
    assert response.status_code == 202, response.text
    assert db.execute("SELECT message_partition_of(%s)", (mid,)).fetchone() != (None,)
