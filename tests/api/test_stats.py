"""Delivery statistics from the per-mailing status counters, and the counters themselves
(kept by triggers on `message`) against a GROUP BY over the messages."""

from __future__ import annotations

import random
from datetime import datetime

import httpx
import psycopg
import pytest

from tests.api.helpers import (
    MAILING_STATUSES,
    MESSAGE_STATUSES,
    assert_error,
    counter_rows,
    create_mailing,
    grouped_rows,
    insert_clients,
    insert_mailing,
    insert_messages,
    set_mailing,
    start_mailing,
)


def zeros() -> dict[str, int]:
    return dict.fromkeys(MESSAGE_STATUSES, 0)


async def test_stats_of_an_empty_service(api: httpx.AsyncClient) -> None:
    response = await api.get("/mailings/stats")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [],
        "next_after_id": None,
        "totals": zeros(),
        "mailings_by_status": dict.fromkeys(MAILING_STATUSES, 0),
    }


@pytest.fixture
async def seeded(api: httpx.AsyncClient, db: psycopg.Connection) -> dict[str, int]:
    """Four live mailings (running with messages, scheduled without, completed, paused) and a
    deleted one whose messages must not count in the totals."""
    clients = insert_clients(db, 10)
    running = (await create_mailing(api))["id"]
    scheduled = (await create_mailing(api))["id"]
    completed = (await create_mailing(api))["id"]
    paused = (await create_mailing(api))["id"]
    deleted = (await create_mailing(api))["id"]
    start_mailing(db, running)
    set_mailing(db, completed, status="completed", started_at="sql:now()", completed_at="sql:now()")
    start_mailing(db, paused, status="paused")
    set_mailing(db, running, fanout_done_at="sql:now()")

    # running: 10 pending, then the scheduler and senders move them along (multi-row updates).
    ids = insert_messages(db, running, clients)
    db.execute("UPDATE message SET status = 'queued' WHERE id = ANY(%s)", (ids[:8],))
    db.execute("UPDATE message SET status = 'sending' WHERE id = ANY(%s)", (ids[:6],))
    db.execute("UPDATE message SET status = 'sent' WHERE id = ANY(%s)", (ids[:4],))
    db.execute("UPDATE message SET status = 'retrying' WHERE id = ANY(%s)", (ids[4:5],))
    db.execute("UPDATE message SET status = 'failed' WHERE id = ANY(%s)", (ids[5:6],))
    # -> sent 4, retrying 1, failed 1, queued 2, pending 2

    # completed: 3 sent, 2 expired, 1 cancelled.
    insert_messages(db, completed, clients[:3], "sent")
    insert_messages(db, completed, clients[3:5], "expired")
    insert_messages(db, completed, clients[5:6], "cancelled")
    # paused: 2 pending.
    insert_messages(db, paused, clients[:2], "pending")
    # deleted: 5 sent, gone from the API.
    insert_messages(db, deleted, clients[:5], "sent")
    assert (await api.delete(f"/mailings/{deleted}")).status_code == 204
    return {
        "running": running,
        "scheduled": scheduled,
        "completed": completed,
        "paused": paused,
        "deleted": deleted,
    }


async def test_all_stats(api: httpx.AsyncClient, seeded: dict[str, int]) -> None:
    response = await api.get("/mailings/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    items = {item["mailing_id"]: item for item in body["items"]}
    assert list(items) == [
        seeded["running"],
        seeded["scheduled"],
        seeded["completed"],
        seeded["paused"],
    ]
    assert body["next_after_id"] is None

    running = items[seeded["running"]]
    assert running["status"] == "running"
    assert running["counts"] == zeros() | {
        "sent": 4,
        "retrying": 1,
        "failed": 1,
        "queued": 2,
        "pending": 2,
    }
    assert running["total"] == 10
    assert items[seeded["scheduled"]]["counts"] == zeros()
    assert items[seeded["scheduled"]]["total"] == 0
    assert items[seeded["completed"]]["counts"] == zeros() | {
        "sent": 3,
        "expired": 2,
        "cancelled": 1,
    }
    assert items[seeded["completed"]]["status"] == "completed"
    assert items[seeded["paused"]]["counts"] == zeros() | {"pending": 2}
    for item in items.values():
        assert list(item["counts"]) == list(MESSAGE_STATUSES)  # every status, zeros included
        assert item["total"] == sum(item["counts"].values())
        assert datetime.fromisoformat(item["start_at"]) < datetime.fromisoformat(item["end_at"])

    # Totals over the live mailings: the deleted mailing's 5 sent are left out.
    assert body["totals"] == zeros() | {
        "sent": 7,
        "retrying": 1,
        "failed": 1,
        "queued": 2,
        "pending": 4,
        "expired": 2,
        "cancelled": 1,
    }
    assert body["mailings_by_status"] == {
        "scheduled": 1,
        "awaiting_approval": 0,
        "running": 1,
        "paused": 1,
        "completed": 1,
        "cancelled": 0,
    }


async def test_all_stats_paginate_with_totals_over_everything(
    api: httpx.AsyncClient, seeded: dict[str, int]
) -> None:
    first = (await api.get("/mailings/stats", params={"limit": 3})).json()
    assert [i["mailing_id"] for i in first["items"]] == [
        seeded["running"],
        seeded["scheduled"],
        seeded["completed"],
    ]
    assert first["next_after_id"] == seeded["completed"]
    second = (
        await api.get("/mailings/stats", params={"limit": 3, "after_id": first["next_after_id"]})
    ).json()
    assert [i["mailing_id"] for i in second["items"]] == [seeded["paused"]]
    assert second["next_after_id"] is None
    assert second["totals"] == first["totals"]
    assert second["mailings_by_status"] == first["mailings_by_status"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after_id": -1}])
async def test_invalid_stats_parameters_are_422(api: httpx.AsyncClient, params: dict) -> None:
    assert_error(await api.get("/mailings/stats", params=params), 422, next(iter(params)))


async def test_one_mailings_stats(api: httpx.AsyncClient, seeded: dict[str, int]) -> None:
    response = await api.get(f"/mailings/{seeded['running']}/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mailing_id"] == seeded["running"]
    assert body["status"] == "running"
    assert body["counts"] == zeros() | {
        "sent": 4,
        "retrying": 1,
        "failed": 1,
        "queued": 2,
        "pending": 2,
    }
    assert body["total"] == 10
    assert body["started_at"] is not None
    assert body["fanout_done_at"] is not None
    assert body["completed_at"] is None
    assert body["created_at"] is not None

    empty = (await api.get(f"/mailings/{seeded['scheduled']}/stats")).json()
    assert empty["counts"] == zeros()
    assert (empty["total"], empty["started_at"], empty["fanout_done_at"]) == (0, None, None)

    done = (await api.get(f"/mailings/{seeded['completed']}/stats")).json()
    assert done["completed_at"] is not None
    assert done["total"] == 6

    assert_error(await api.get(f"/mailings/{seeded['deleted']}/stats"), 404)


async def test_stats_follow_a_client_delete(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    clients = insert_clients(db, 3)
    mailing = (await create_mailing(api))["id"]
    start_mailing(db, mailing)
    insert_messages(db, mailing, clients[:2], "pending")
    insert_messages(db, mailing, clients[2:], "sent")
    assert (await api.delete(f"/clients/{clients[0]}")).status_code == 204
    assert (await api.delete(f"/clients/{clients[2]}")).status_code == 204
    body = (await api.get(f"/mailings/{mailing}/stats")).json()
    assert body["counts"] == zeros() | {"pending": 1, "cancelled": 1, "sent": 1}
    assert counter_rows(db) == grouped_rows(db)


# --- the counters against a GROUP BY ---------------------------------------------------------


def check_counters(db: psycopg.Connection) -> None:
    assert counter_rows(db) == grouped_rows(db)
    negative = db.execute("SELECT count(*) FROM message_count WHERE count < 0").fetchone()
    assert negative == (0,)


async def test_counters_agree_with_group_by_after_a_mix_of_changes(db: psycopg.Connection) -> None:
    clients = insert_clients(db, 30)
    m1, m2, m3 = (insert_mailing(db, status="running") for _ in range(3))
    check_counters(db)

    ids1 = insert_messages(db, m1, clients)  # one 30-row statement
    ids2 = insert_messages(db, m2, clients[:10], "queued")
    check_counters(db)

    # Multi-row updates moving statuses, across mailings in one statement.
    db.execute("UPDATE message SET status = 'sending' WHERE id = ANY(%s)", (ids1[:12] + ids2[:5],))
    check_counters(db)
    db.execute("UPDATE message SET status = 'sent' WHERE status = 'sending'")
    check_counters(db)
    # Rows that keep their status (a no-op for the counters) mixed with rows that move.
    db.execute(
        "UPDATE message SET status = CASE WHEN id %% 2 = 0 THEN 'failed' ELSE status END,"
        " attempts = attempts + 1 WHERE mailing_id = %s",
        (m1,),
    )
    check_counters(db)
    # An update that changes nothing at all.
    db.execute("UPDATE message SET attempts = attempts WHERE mailing_id = %s", (m2,))
    db.execute("UPDATE message SET status = 'sent' WHERE false")
    check_counters(db)
    # A message moved to another mailing (the counters follow both columns).
    db.execute("UPDATE message SET mailing_id = %s WHERE id = %s", (m3, ids2[-1]))
    check_counters(db)
    # Deletes, single and multi-row.
    db.execute("DELETE FROM message WHERE id = %s", (ids1[0],))
    db.execute("DELETE FROM message WHERE mailing_id = %s AND status = 'failed'", (m1,))
    check_counters(db)
    # A rolled-back transaction leaves the counters as they were.
    before = counter_rows(db)
    with db.transaction(force_rollback=True):
        db.execute("UPDATE message SET status = 'expired'")
        db.execute("DELETE FROM message WHERE mailing_id = %s", (m2,))
    assert counter_rows(db) == before
    check_counters(db)
    # Everything gone: every counter back to zero.
    db.execute("DELETE FROM message")
    assert counter_rows(db) == {}
    check_counters(db)


async def test_counters_agree_with_group_by_under_random_statements(
    db: psycopg.Connection,
) -> None:
    rng = random.Random(20261122)
    clients = insert_clients(db, 40)
    mailings = [insert_mailing(db, status="running") for _ in range(4)]
    for step in range(60):
        action = rng.choice(["insert", "update", "update", "update", "delete"])
        mailing = rng.choice(mailings)
        if action == "insert":
            chosen = rng.sample(clients, rng.randint(1, 10))
            db.execute(
                "INSERT INTO message (mailing_id, client_id, status)"
                " SELECT %s, c, %s FROM unnest(%s::bigint[]) AS c"
                " ON CONFLICT (mailing_id, client_id) DO NOTHING",
                (mailing, rng.choice(MESSAGE_STATUSES), chosen),
            )
        elif action == "update":
            db.execute(
                "UPDATE message SET status = %s WHERE mailing_id = ANY(%s) AND status = ANY(%s)"
                " AND id %% %s = %s",
                (
                    rng.choice(MESSAGE_STATUSES),
                    rng.sample(mailings, rng.randint(1, len(mailings))),
                    rng.sample(MESSAGE_STATUSES, rng.randint(1, 4)),
                    rng.randint(1, 3),
                    0,
                ),
            )
        else:
            db.execute(
                "DELETE FROM message WHERE mailing_id = %s AND id %% %s = 0",
                (mailing, rng.randint(2, 5)),
            )
        assert counter_rows(db) == grouped_rows(db), f"after step {step} ({action})"
