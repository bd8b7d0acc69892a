"""Test sends in the worker SQL: leased whatever the mailing's status, claimed past its send
window, ended by their own deadline, and invisible to the mailing's counters and completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import leasing, sweep
from services.sender import store
from shared.db import create_engine, create_session_factory
from shared.domain import test_send
from shared.domain.end_time import END_REACHED
from shared.domain.opt_out import OPTED_OUT_REASON
from shared.domain.statuses import MessageStatus
from shared.settings import BaseServiceSettings
from tests.db.test_worker_sql import LEASE_S, Rows, job
from tests.support import database

S = MessageStatus
CLOSED_WINDOW = (
    "(now() AT TIME ZONE 'UTC')::time + interval '1 hour',"
    " (now() AT TIME ZONE 'UTC')::time + interval '2 hours'"
)


@pytest.fixture(scope="module")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=2))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


class SendRows(Rows):
    def test_message(
        self,
        mailing_id: int,
        *,
        status: str = "pending",
        token: int | None = None,
        lease_in_s: float | None = None,
        age_s: float = 0,
        phone: str = "79990001122",
    ) -> int:
        return int(
            self.execute(
                "INSERT INTO message (mailing_id, is_test, phone, status, token, lease_until,"
                " created_at, not_before) VALUES (%s, true, %s, %s, %s,"
                " now() + make_interval(secs => %s), now() - make_interval(secs => %s),"
                " now() - make_interval(secs => %s)) RETURNING id",
                [mailing_id, phone, status, token, lease_in_s, age_s, age_s],
            )[0][0]
        )

    def counters(self, mailing_id: int) -> dict[str, int]:
        return {
            status: count
            for status, count in self.execute(
                "SELECT status, count FROM message_count WHERE mailing_id = %s AND count <> 0",
                [mailing_id],
            )
        }


@pytest.fixture
def rows(clean_db: str) -> SendRows:
    return SendRows(clean_db)


async def test_tests_are_leased_whatever_the_mailing_status_and_only_by_the_test_lease(
    rows: SendRows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    scheduled = rows.mailing(status="scheduled")
    paused = rows.mailing(status="paused")
    running = rows.mailing()
    ended = rows.mailing(status="completed", ends_in_s=-30)
    cancelled = rows.mailing(status="cancelled")
    go = {
        "scheduled": rows.test_message(scheduled),
        "paused": rows.test_message(paused),
        "running": rows.test_message(running),
        "ended mailing": rows.test_message(ended),
        "lapsed lease": rows.test_message(running, status=S.SENDING, token=7, lease_in_s=-1),
    }
    stay = {
        "cancelled mailing": rows.test_message(cancelled),
        "past its deadline": rows.test_message(running, age_s=test_send.LIFETIME_S + 1),
        "held": rows.test_message(running, status=S.SENDING, token=8, lease_in_s=30),
    }
    regular = rows.message(running)

    # The regular lease (and reaper) leaves every test alone, even one of a running mailing.
    async with sessions() as session:
        leases = await leasing.lease_due_messages(session, limit=100, ttl_s=LEASE_S)
    assert [lease.message_id for lease in leases] == [regular]

    async with sessions() as session:
        tests = await leasing.lease_test_sends(session, limit=100, ttl_s=LEASE_S)
    by_id = {lease.message_id: lease for lease in tests}
    assert set(by_id) == set(go.values())
    assert by_id[go["lapsed lease"]].reaped and not by_id[go["scheduled"]].reaped
    assert by_id[go["lapsed lease"]].token != 7
    # A test's job lives until the test's deadline, not the mailing's end (long past here).
    left = by_id[go["ended mailing"]].seconds_left
    assert test_send.LIFETIME_S - 30 < left <= test_send.LIFETIME_S
    for message_id in go.values():
        assert rows.get(message_id)["status"] == S.QUEUED
    assert rows.get(stay["cancelled mailing"])["status"] == S.PENDING
    assert rows.get(stay["past its deadline"])["status"] == S.PENDING
    assert rows.get(stay["held"])["token"] == 8


async def test_a_test_is_claimed_past_the_window_and_status_but_not_past_its_deadline(
    rows: SendRows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    paused_closed = rows.mailing(status="paused", window=CLOSED_WINDOW)
    deleted = rows.mailing(status="cancelled")
    rows.execute("UPDATE mailing SET deleted_at = now() WHERE id = %s", [deleted])
    go = rows.test_message(paused_closed, status=S.QUEUED, token=1)
    late = rows.test_message(paused_closed, status=S.QUEUED, token=2, age_s=test_send.LIFETIME_S)
    gone = rows.test_message(deleted, status=S.QUEUED, token=3)
    async with sessions() as session:
        claimed = {
            c.message_id: c
            for c in await store.claim(
                session,
                [job(go, 1, paused_closed), job(late, 2, paused_closed), job(gone, 3, deleted)],
                margin_s=2.0,
                lease_s=LEASE_S,
            )
        }
    assert claimed[go].status is S.SENDING and claimed[go].is_test
    assert claimed[go].phone == "79990001122" and claimed[go].client_id is None
    assert claimed[go].text == "hi"
    assert test_send.LIFETIME_S - 30 < claimed[go].seconds_to_end <= test_send.LIFETIME_S
    assert claimed[late].status is S.EXPIRED
    assert rows.get(late)["last_error"] == END_REACHED
    assert claimed[gone].status is S.CANCELLED
    assert rows.counters(paused_closed) == {}


async def test_results_and_sweep_of_tests_leave_the_mailing_counters_and_completion_alone(
    rows: SendRows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ended = rows.mailing(ends_in_s=-1)
    done = rows.message(ended, status=S.SENT)
    fresh = rows.test_message(ended, status=S.RETRYING, token=1, lease_in_s=30)
    old = rows.test_message(ended, status=S.RETRYING, token=2, lease_in_s=30, age_s=700)
    held_old = rows.test_message(ended, status=S.SENDING, token=3, lease_in_s=30, age_s=700)
    sending = rows.test_message(ended, status=S.SENDING, token=4, lease_in_s=30)
    before = rows.counters(ended)
    assert before == {"sent": 1}

    async with sessions() as session:
        # The mailing's end does not expire its tests; their own deadline does.
        assert await sweep.expire_chunk(session, 100) == 0
        assert await sweep.expire_test_sends(session, 100) == 1
        written = await store.write_results(
            session, [store.Result(sending, ended, 4, S.SENT)], lease_s=LEASE_S
        )
        # Open tests do not hold the mailing back from completing.
        assert await sweep.complete_mailings(session) == [ended]
    assert written == {sending: S.SENT}
    assert rows.get(old)["status"] == S.EXPIRED and rows.get(old)["last_error"] == END_REACHED
    assert rows.get(fresh)["status"] == S.RETRYING
    assert rows.get(held_old)["status"] == S.SENDING
    assert rows.counters(ended) == before
    assert rows.get(done)["status"] == S.SENT
    assert rows.execute("SELECT count(*) FROM message_minute WHERE mailing_id = %s", [ended]) == [
        (0,)
    ]


async def test_release_and_expired_dead_letter_of_a_test_use_its_deadline(
    rows: SendRows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ended = rows.mailing(status="paused", ends_in_s=-30)
    released = rows.test_message(ended, status=S.QUEUED, token=1, lease_in_s=30)
    fresh = rows.test_message(ended, status=S.QUEUED, token=2)
    late = rows.test_message(ended, status=S.QUEUED, token=3, age_s=test_send.LIFETIME_S)
    async with sessions() as session:
        await store.release(session, [job(released, 1, ended)], delay_s=0)
        statuses = await store.dead_letter_expired(
            session, [job(fresh, 2, ended), job(late, 3, ended)], margin_s=2.0
        )
    assert statuses == {fresh: S.PENDING, late: S.EXPIRED}
    # Pending again, the test lease takes both back (the mailing's status does not matter).
    async with sessions() as session:
        tests = await leasing.lease_test_sends(session, limit=10, ttl_s=LEASE_S)
    assert {lease.message_id for lease in tests} == {released, fresh}


def test_the_test_lease_and_sweep_probe_the_open_tests_index(clean_db: str) -> None:
    """They run every scheduler round: they must never scan a mailing's messages."""
    with database.connect(clean_db) as conn:
        for statement in (leasing.LEASE_TESTS, sweep.EXPIRE_TESTS):
            sql = str(statement.compile(compile_kwargs={"literal_binds": False}))
            sql = sql.replace(":limit", "10").replace(":ttl", "30")
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}").fetchall())
            # `message` is partitioned (0007): each partition probes its own copy of
            # ix_message_client_id_open (named after the partition), never a scan.
            assert "Index Cond: (client_id IS NULL)" in plan, plan
            assert "Seq Scan on message" not in plan, plan


@given(
    created=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    )
)
@settings(max_examples=50, deadline=None)
def test_the_deadline_twins_agree(db_name: str, created: datetime) -> None:
    with database.connect(db_name) as conn:
        row: Any = conn.execute(
            f"SELECT {test_send.deadline_sql('CAST(%(c)s AS timestamptz)')}", {"c": created}
        ).fetchone()
    assert row[0] == test_send.deadline(created) == created + timedelta(seconds=600)


async def test_a_test_to_the_phone_of_a_client_who_opted_out_since_is_cancelled(
    rows: SendRows, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The api refuses a test to an opted-out client's phone; one who opts out after the test
    was made stops it at the claim, as they would stop their own message."""
    mailing = rows.mailing()
    client = rows.client()
    (phone,) = rows.execute("SELECT phone FROM client WHERE id = %s", [client])[0]
    stopped = rows.test_message(mailing, status=S.QUEUED, token=1, phone=phone)
    other = rows.test_message(mailing, status=S.QUEUED, token=2)
    rows.execute("UPDATE client SET opted_out_at = now() WHERE id = %s", [client])
    async with sessions() as session:
        claimed = {
            c.message_id: c.status
            for c in await store.claim(
                session,
                [job(stopped, 1, mailing), job(other, 2, mailing)],
                margin_s=2.0,
                lease_s=LEASE_S,
            )
        }
    assert claimed == {stopped: S.CANCELLED, other: S.SENDING}
    assert rows.get(stopped)["last_error"] == OPTED_OUT_REASON
