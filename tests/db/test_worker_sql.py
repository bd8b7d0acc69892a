"""The worker SQL, one statement at a time, against the real database (no processes).

Lease and reaper (scheduler.leasing), claim, result write and release (sender.store), sweep
(scheduler.sweep): each test sets rows up, runs the statement through an AsyncSession as the
services do, and reads the rows back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import activation, leasing, sweep
from services.sender import store
from shared.db import create_engine, create_session_factory
from shared.domain.end_time import END_REACHED
from shared.domain.lifecycle import may_follow
from shared.domain.statuses import MessageStatus
from shared.messaging import Job
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.rows import insert_client, insert_mailing, insert_message, insert_messages

S = MessageStatus
LEASE_S = 30.0


@pytest.fixture(scope="module")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=2))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


class Rows:
    def __init__(self, db_name: str) -> None:
        self.db_name = db_name

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with database.connect(self.db_name) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def mailing(
        self, *, status: str = "running", ends_in_s: float = 3600, window: str = "NULL, NULL"
    ) -> int:
        with database.connect(self.db_name) as conn:
            return insert_mailing(
                conn,
                status=status,
                text="hi",
                starts_in_s=-60,
                ends_in_s=ends_in_s,
                started=True,
                fanout_done=True,
                window_sql=window,
            )

    def client(self, *, timezone: str = "UTC") -> int:
        with database.connect(self.db_name) as conn:
            return insert_client(conn, timezone=timezone)

    def message(self, mailing_id: int, **columns: Any) -> int:
        """A message of a client of its own (see `insert_message` for the columns)."""
        with database.connect(self.db_name) as conn:
            return insert_message(conn, mailing_id, insert_client(conn), **columns)

    def get(self, message_id: int) -> dict[str, Any]:
        with database.connect(self.db_name) as conn:
            cur = conn.execute(
                "SELECT status, token, attempts, last_error, lease_until > now() AS leased,"
                " not_before > now() AS later, sent_at IS NOT NULL AS sent"
                " FROM message WHERE id = %s",
                [message_id],
            )
            assert cur.description is not None
            names = [c.name for c in cur.description]
            row = cur.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))


@pytest.fixture
def rows(clean_db: str) -> Rows:
    return Rows(clean_db)


def job(message_id: int, token: int, mailing_id: int) -> Job:
    return Job(message_id, token, mailing_id)


# --- activation ------------------------------------------------------------------------------


async def test_activation_starts_due_mailings_with_the_request_that_last_changed_each(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    due, audited, later = (rows.mailing(status="scheduled") for _ in range(3))
    rows.execute("UPDATE mailing SET start_at = now() + interval '1 minute' WHERE id = %s", [later])
    tp = "00-{:032x}-{:016x}-01"
    for action, request_id, traceparent in [
        ("create", "req-create", tp.format(1, 1)),
        ("update", "req-update", tp.format(2, 2)),
        # A test send is not a change: the activation still links to the update.
        ("test_send", "req-test", tp.format(3, 3)),
    ]:
        rows.execute(
            "INSERT INTO audit_log (actor_name, actor_kind, actor_role, action, target_type,"
            " target_id, request_id, traceparent) VALUES ('ops', 'token', 'admin', %s,"
            " 'mailing', %s, %s, %s)",
            [action, str(audited), request_id, traceparent],
        )
    async with sessions() as session:
        started = await activation.claim_due_mailings(session)
    assert sorted(started, key=lambda s: s.mailing_id) == [
        activation.Started(due, None, None),
        activation.Started(audited, "req-update", tp.format(2, 2)),
    ]
    assert [r[0] for r in rows.execute("SELECT status FROM mailing WHERE id = %s", [later])] == [
        "scheduled"
    ]
    async with sessions() as session:
        assert await activation.claim_due_mailings(session) == []


# --- lease and reaper ------------------------------------------------------------------------


async def test_lease_takes_due_pending_messages_of_running_mailings(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    running = rows.mailing()
    paused = rows.mailing(status="paused")
    ended = rows.mailing(ends_in_s=-1)
    due = rows.message(running)
    later = rows.message(running, not_before_in_s=60)
    of_paused = rows.message(paused)
    of_ended = rows.message(ended)
    async with sessions() as session:
        leases = await leasing.lease_due_messages(session, limit=10, ttl_s=LEASE_S)
    assert [(lease.message_id, lease.reaped) for lease in leases] == [(due, False)]
    assert 3500 < leases[0].seconds_left <= 3600
    assert rows.get(due)["status"] == S.QUEUED and rows.get(due)["leased"]
    assert rows.get(due)["token"] == leases[0].token
    for untouched in (later, of_paused, of_ended):
        assert rows.get(untouched)["status"] == S.PENDING
    async with sessions() as session:
        assert await leasing.live_leases(session) == 1


async def test_leases_the_broker_refused_are_due_again_at_once(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A broker restart must not hold the lease cap full of dead leases until they lapse."""
    mailing = rows.mailing()
    refused, published = rows.message(mailing), rows.message(mailing)
    async with sessions() as session:
        leases = {
            lease.message_id: lease
            for lease in await leasing.lease_due_messages(session, limit=10, ttl_s=LEASE_S)
        }
    stale = dataclasses.replace(leases[published], token=leases[published].token + 99)
    async with sessions() as session:
        # The other's token no longer matches (leased again meanwhile): it is left alone.
        assert await leasing.return_unpublished(session, [leases[refused], stale]) == 1
    assert rows.get(refused)["status"] == S.PENDING and not rows.get(refused)["leased"]
    assert rows.get(published)["status"] == S.QUEUED and rows.get(published)["leased"]
    assert may_follow(S.QUEUED, S.PENDING)
    async with sessions() as session:
        again = await leasing.lease_due_messages(session, limit=10, ttl_s=LEASE_S)
    assert [lease.message_id for lease in again] == [refused]


async def test_the_reaper_requeues_lapsed_leases_under_a_new_token(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailing = rows.mailing()
    # A token the sequence will not reach here (7 could be the new one: the sequence is shared
    # by every test and never rolled back).
    stale = 7_000_000_000
    lapsed = {
        status: rows.message(mailing, status=status, token=stale, lease_in_s=-1)
        for status in (S.QUEUED, S.SENDING, S.RETRYING)
    }
    live = rows.message(mailing, status=S.SENDING, token=8, lease_in_s=30)
    async with sessions() as session:
        # Lapsed leases are not live, but still outstanding (queued or sending): the lease
        # cap measures the senders' drain on the outstanding ones, so a lapse is no drain.
        assert await leasing.lease_counts(session) == (1, 3)
        leases = await leasing.lease_due_messages(session, limit=10, ttl_s=LEASE_S)
        assert await leasing.lease_counts(session) == (4, 4)  # the retrying one is queued now
    assert {lease.message_id for lease in leases} == set(lapsed.values())
    assert all(lease.reaped and lease.token != stale for lease in leases)
    assert rows.get(live) == {**rows.get(live), "status": S.SENDING, "token": 8}


# --- claim, release and results --------------------------------------------------------------


async def _claim(
    sessions: async_sessionmaker[AsyncSession], jobs: list[Job], margin_s: float = 2.0
) -> dict[int, store.Claimed]:
    async with sessions() as session:
        claimed = await store.claim(session, jobs, margin_s=margin_s, lease_s=LEASE_S)
    return {c.message_id: c for c in claimed}


async def test_claim_decides_each_message_in_the_database(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    running = rows.mailing()
    paused = rows.mailing(status="paused")
    ending = rows.mailing(ends_in_s=1.0)  # inside the 2 s margin
    # A window that is closed now, whatever the hour: it ends a minute before it opens again.
    closed = rows.mailing(
        window="(now() AT TIME ZONE 'UTC')::time + interval '1 hour',"
        " (now() AT TIME ZONE 'UTC')::time + interval '2 hours'"
    )
    ids = {
        "send": rows.message(running, status=S.QUEUED, token=1),
        "retry": rows.message(running, status=S.RETRYING, token=2, attempts=3),
        "paused": rows.message(paused, status=S.QUEUED, token=3),
        "ending": rows.message(ending, status=S.QUEUED, token=4),
        "closed": rows.message(closed, status=S.QUEUED, token=5),
        "stale": rows.message(running, status=S.QUEUED, token=6),
        "deleted client": rows.message(running, status=S.QUEUED, token=9),
    }
    rows.execute(
        "UPDATE client SET deleted_at = now() WHERE id ="
        " (SELECT client_id FROM message WHERE id = %s)",
        [ids["deleted client"]],
    )
    mailing_of = {"paused": paused, "ending": ending, "closed": closed}
    tokens = {"send": 1, "retry": 2, "paused": 3, "ending": 4, "closed": 5, "stale": 60}
    tokens["deleted client"] = 9
    jobs = [job(ids[k], tokens[k], mailing_of.get(k, running)) for k in ids]
    claimed = await _claim(sessions, jobs)

    assert ids["stale"] not in claimed and rows.get(ids["stale"])["status"] == S.QUEUED
    expected = {
        "send": S.SENDING,
        "retry": S.SENDING,
        "paused": S.PENDING,
        "ending": S.EXPIRED,
        "closed": S.PENDING,
        "deleted client": S.CANCELLED,
    }
    for name, status in expected.items():
        assert claimed[ids[name]].status is status, name
        assert rows.get(ids[name])["status"] == status, name
        assert may_follow(S.QUEUED, status)
    assert claimed[ids["retry"]].attempts == 3
    assert claimed[ids["send"]].phone.startswith("79") and claimed[ids["send"]].text == "hi"
    assert rows.get(ids["send"])["leased"] and rows.get(ids["send"])["token"] == 1
    assert rows.get(ids["ending"])["last_error"] == END_REACHED
    assert rows.get(ids["closed"])["later"]  # not before the window opens
    assert rows.get(ids["paused"])["token"] is None

    # A redelivered job finds its message taken: nothing happens twice.
    assert await _claim(sessions, [job(ids["send"], 1, running)]) == {}


async def test_results_land_only_for_the_holder_but_a_delivery_always_lands(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailing = rows.mailing()
    sent = rows.message(mailing, status=S.SENDING, token=1, lease_in_s=30)
    retry = rows.message(mailing, status=S.SENDING, token=2, lease_in_s=30, attempts=1)
    stolen = rows.message(mailing, status=S.QUEUED, token=30, lease_in_s=30)  # reaped meanwhile
    stolen_sent = rows.message(mailing, status=S.QUEUED, token=40, lease_in_s=30)
    # Ended by the sweep, an opt-out, a failure while the request was under way: a delivery
    # lands on the first two (the provider has it), not on a failed one.
    swept, opted_out, failed = (
        rows.message(mailing, status=status) for status in (S.EXPIRED, S.CANCELLED, S.FAILED)
    )
    results = [
        store.Result(sent, mailing, 1, S.SENT),
        store.Result(retry, mailing, 2, S.RETRYING, "HTTP 500", delay_s=5.0),
        store.Result(stolen, mailing, 3, S.FAILED, "HTTP 400"),
        store.Result(stolen_sent, mailing, 4, S.SENT),
        *(store.Result(m, mailing, 5, S.SENT) for m in (swept, opted_out, failed)),
    ]
    async with sessions() as session:
        written = await store.write_results(session, results, lease_s=LEASE_S)
    assert written == {
        sent: S.SENT,
        retry: S.RETRYING,
        stolen_sent: S.SENT,
        swept: S.SENT,
        opted_out: S.SENT,
    }
    assert rows.get(failed)["status"] == S.FAILED
    assert rows.get(sent)["sent"] and rows.get(sent)["token"] is None
    after = rows.get(retry)
    assert after["token"] == 2 and after["attempts"] == 2 and after["later"] and after["leased"]
    assert after["last_error"] == "HTTP 500"
    assert rows.get(stolen)["status"] == S.QUEUED


async def test_release_gives_jobs_back_without_spending_an_attempt(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailing = rows.mailing()
    queued = rows.message(mailing, status=S.QUEUED, token=1, lease_in_s=30, attempts=2)
    async with sessions() as session:
        await store.release(session, [job(queued, 1, mailing)], delay_s=10)
    after = rows.get(queued)
    assert after["status"] == S.PENDING and after["attempts"] == 2 and after["later"]
    assert after["token"] is None


async def test_an_expired_dead_letter_expires_only_at_the_end(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ending = rows.mailing(ends_in_s=1.0)
    going = rows.mailing()
    late = rows.message(ending, status=S.QUEUED, token=1)
    early = rows.message(going, status=S.QUEUED, token=2)
    async with sessions() as session:
        statuses = await store.dead_letter_expired(
            session, [job(late, 1, ending), job(early, 2, going)], margin_s=2.0
        )
    assert statuses == {late: S.EXPIRED, early: S.PENDING}


# --- sweep ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["expire", "cancel"])
def test_a_sweep_chunk_locks_its_rows_once_whatever_the_statistics_say(
    rows: Rows, step: str
) -> None:
    """The soak's stall: with a partition analysed before its mailing's rows came (autovacuum
    off), a joined UPDATE rescanned the locking subquery once per row of the mailing, and a
    100-row chunk ran past its 5 s timeout. The chosen ids are one array, fetched once."""
    mailing = rows.mailing(ends_in_s=-1) if step == "expire" else rows.mailing(status="cancelled")
    rows.message(mailing)
    rows.execute("ANALYZE message")
    with database.connect(rows.db_name) as conn:
        clients = [insert_client(conn) for _ in range(2_000)]
        insert_messages(conn, mailing, clients)
    statement = sweep.EXPIRE_CHUNK if step == "expire" else sweep.CANCEL_CHUNK
    sql = statement.text.replace(":mailing_ids", "%(ids)s").replace(":limit", "%(limit)s")
    with database.connect(rows.db_name) as conn:
        plan = conn.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", {"ids": [mailing], "limit": 100}
        ).fetchone()[0][0]["Plan"]  # type: ignore[index]
        conn.rollback()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    lock_rows = [n for n in nodes(plan) if n["Node Type"] == "LockRows"]
    assert [n["Actual Loops"] for n in lock_rows] == [1]
    assert plan["Plans"][0]["Actual Rows"] == 100  # the rows updated


def test_a_lease_finds_its_rows_by_key_whatever_the_statistics_say(rows: Rows) -> None:
    """As the sweep's chunks above: the lease's UPDATE joined its chosen rows to a scan of the
    whole mailing (planned as 1 row), about 2,000 x 100 comparisons here, 20,000 x 1,000 in the
    soak's mailings (quadratic). Now the plan handles a few times the mailing's rows."""
    mailing = rows.mailing()
    rows.message(mailing)
    rows.execute("ANALYZE message")
    with database.connect(rows.db_name) as conn:
        clients = [insert_client(conn) for _ in range(2_000)]
        insert_messages(conn, mailing, clients)
    sql = leasing.LEASE.text
    for name in ("mailing_ids", "limit", "per_mailing", "ttl"):
        sql = sql.replace(f":{name}", f"%({name})s")
    params = {"mailing_ids": [mailing], "limit": 100, "per_mailing": 100, "ttl": 30}
    with database.connect(rows.db_name) as conn:
        plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()[0][0]  # type: ignore[index]
        conn.rollback()

    def work(node: dict[str, Any]) -> int:
        own = int(node["Actual Rows"]) * int(node["Actual Loops"])
        return own + sum(work(child) for child in node.get("Plans", []))

    assert plan["Plan"]["Actual Rows"] == 100
    assert work(plan["Plan"]) < 50_000


async def test_sweep_expires_and_cancels_all_but_what_a_sender_holds(
    rows: Rows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ended = rows.mailing(ends_in_s=-1)
    cancelled = rows.mailing(status="cancelled")
    expire = [rows.message(ended, status=s) for s in (S.PENDING, S.QUEUED, S.RETRYING)]
    lapsed_sending = rows.message(ended, status=S.SENDING, token=1, lease_in_s=-1)
    held_sending = rows.message(ended, status=S.SENDING, token=2, lease_in_s=30)
    cancel = rows.message(cancelled, status=S.PENDING)
    held_cancel = rows.message(cancelled, status=S.SENDING, token=3, lease_in_s=30)
    sent = rows.message(ended, status=S.SENT)
    async with sessions() as session:
        assert await sweep.cancel_chunk(session, 100) == 1
        assert await sweep.expire_chunk(session, 100) == 4
    for message_id in (*expire, lapsed_sending):
        assert rows.get(message_id)["status"] == S.EXPIRED
        assert rows.get(message_id)["last_error"] == END_REACHED
    assert rows.get(held_sending)["status"] == S.SENDING
    assert rows.get(cancel)["status"] == S.CANCELLED
    assert rows.get(held_cancel)["status"] == S.SENDING
    assert rows.get(sent)["status"] == S.SENT

    # The sender's result lands, then the mailing completes.
    async with sessions() as session:
        await store.write_results(
            session, [store.Result(held_sending, ended, 2, S.SENT)], lease_s=LEASE_S
        )
    async with sessions() as session:
        assert await sweep.complete_mailings(session) == [ended]
