"""Frequency caps on real PostgreSQL (shared/domain/frequency_cap.py, migration 0014):

- the triggers keep `client_contact`: sent messages count in their minute (a fan-out, a lease,
  a cancel write nothing); test sends and transactional mailings count nothing; unsent
  messages of running mailings are reservations, read from `message`;
- the fan-out creates a capped client's message `cancelled` with `frequency cap` (counted in
  the statistics), with the mailing's own cap or FREQUENCY_CAP;
- the claim cancels a message whose client reached a cap set or lowered since the fan-out;
- two mailings fanning out over the same clients at once give no client more than the cap:
  the advisory lock per block of client ids makes the later chunk see the earlier one's
  reservations (shown step by step, then with two real fan-outs racing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import fanout
from services.sender import store
from shared.db import create_engine, create_session_factory
from shared.domain.frequency_cap import FREQUENCY_CAP_REASON
from shared.messaging import Job
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.waiting import wait_until


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=4))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


class Db:
    def __init__(self, name: str) -> None:
        self.name = name

    def q(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with database.connect(self.name) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def clients(self, n: int) -> None:
        self.q(
            "INSERT INTO client (phone, operator_code, timezone)"
            " SELECT '7912' || lpad(g::text, 7, '0'), '912', 'UTC' FROM generate_series(1, %s) g",
            [n],
        )

    def mailing(
        self,
        *,
        cap: str | None = None,
        transactional: bool = False,
        fanned_out: bool = False,
        status: str = "running",
    ) -> int:
        rows = self.q(
            "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_cursor,"
            " fanout_max_client_id, fanout_done_at, frequency_cap, transactional)"
            " VALUES (now() - interval '1 minute', now() + interval '1 hour', 'hi', %s, now(),"
            " 0, (SELECT coalesce(max(id), 0) FROM client),"
            " CASE WHEN %s THEN now() END, %s, %s) RETURNING id",
            [status, fanned_out, cap, transactional],
        )
        return int(rows[0][0])

    def sent(self, mailing_id: int, client_ids: list[int], ago: str = "1 hour") -> None:
        self.q(
            "INSERT INTO message (mailing_id, client_id, status, sent_at)"
            " SELECT %s, c, 'sent', now() - CAST(%s AS interval)"
            " FROM unnest(CAST(%s AS bigint[])) c",
            [mailing_id, ago, client_ids],
        )

    def contacts(self) -> dict[int, int]:
        """client -> sent messages counted in `client_contact`."""
        return {
            int(client_id): int(count)
            for client_id, count in self.q(
                "SELECT client_id, sum(count) FROM client_contact GROUP BY 1 HAVING sum(count) <> 0"
            )
        }

    def counted(self) -> dict[int, int]:
        """client -> its messages sent or not yet sent in mailings that count (the cap's)."""
        return {
            int(client_id): int(n)
            for client_id, n in self.q(
                "SELECT m.client_id, count(*) FROM message m"
                " JOIN mailing mg ON mg.id = m.mailing_id"
                " WHERE NOT m.is_test AND NOT mg.transactional"
                " AND m.status IN ('pending', 'queued', 'sending', 'retrying', 'sent')"
                " GROUP BY 1"
            )
        }

    def messages(self, mailing_id: int) -> dict[int, tuple[str, str | None]]:
        return {
            client_id: (status, error)
            for client_id, status, error in self.q(
                "SELECT client_id, status, last_error FROM message WHERE mailing_id = %s"
                " AND NOT is_test",
                [mailing_id],
            )
        }


@pytest.fixture
def db(clean_db: str) -> Db:
    return Db(clean_db)


async def fan_out_all(
    sessions: async_sessionmaker[AsyncSession], *, chunk: int = 20_000, cap: str | None = None
) -> None:
    while True:
        async with sessions() as session:
            if await fanout.fanout_chunk(session, chunk, frequency_cap=cap) is None:
                return


def test_the_triggers_keep_the_contact_summary(db: Db) -> None:
    db.clients(3)
    marketing = db.mailing(fanned_out=True)
    transactional = db.mailing(fanned_out=True, transactional=True)
    db.q(
        "INSERT INTO message (mailing_id, client_id)"
        " SELECT %s, g FROM generate_series(1, 3) g UNION ALL SELECT %s, 1",
        [marketing, transactional],
    )
    db.q(
        "INSERT INTO message (mailing_id, is_test, phone) VALUES (%s, true, '79120000001')",
        [marketing],
    )
    assert db.contacts() == {}  # nothing sent yet: a fan-out writes no summary row

    def move(client_id: int, status: str, mailing_id: int = marketing) -> None:
        db.q(
            "UPDATE message SET status = %s,"
            " sent_at = CASE WHEN %s = 'sent' THEN now() ELSE sent_at END"
            " WHERE mailing_id = %s AND client_id = %s",
            [status, status, mailing_id, client_id],
        )

    move(1, "queued")
    move(2, "cancelled")
    assert db.contacts() == {}
    move(1, "sent")
    move(1, "sent", transactional)
    move(3, "failed")
    db.q("UPDATE message SET status = 'sent', sent_at = now() WHERE is_test")
    assert db.contacts() == {1: 1}
    minute = db.q("SELECT bucket = date_trunc('minute', now(), 'UTC') FROM client_contact")
    assert minute == [(True,)]
    move(3, "pending")  # an admin's resend: a reservation again, read from `message`
    assert db.counted() == {1: 1, 3: 1}
    db.q("DELETE FROM message WHERE mailing_id = %s", [marketing])
    assert db.contacts() == {1: 1}  # a deleted sent message was sent all the same


async def test_the_fanout_cancels_the_messages_of_clients_at_the_cap(
    db: Db, sessions: async_sessionmaker[AsyncSession]
) -> None:
    db.clients(10)
    earlier = db.mailing(fanned_out=True)
    db.sent(earlier, [1, 2, 3, 4])
    db.q("UPDATE client SET opted_out_at = now() WHERE id = 10")
    own_cap = db.mailing(cap="1/24h")
    await fan_out_all(sessions)
    capped = {c: ("cancelled", FREQUENCY_CAP_REASON) for c in (1, 2, 3, 4)}
    assert db.messages(own_cap) == {**capped, **{c: ("pending", None) for c in range(5, 10)}}
    counts = dict(db.q("SELECT status, count FROM message_count WHERE mailing_id = %s", [own_cap]))
    assert counts == {"cancelled": 4, "pending": 5}

    # FREQUENCY_CAP for a mailing without its own: 2/24h, every client has one message now.
    by_global = db.mailing()
    await fan_out_all(sessions, cap="2/24h")
    assert {s for s, _ in db.messages(by_global).values()} == {"pending"}
    # Now each has two: the next is capped, unless transactional (neither capped nor counted).
    third = db.mailing()
    receipt = db.mailing(transactional=True, cap="1/24h")
    await fan_out_all(sessions, cap="2/24h")
    assert set(db.messages(third).values()) == {("cancelled", FREQUENCY_CAP_REASON)}
    assert {s for s, _ in db.messages(receipt).values()} == {"pending"}
    assert max(db.counted().values()) == 2


async def test_the_claim_holds_a_cap_lowered_mid_mailing(
    db: Db, sessions: async_sessionmaker[AsyncSession]
) -> None:
    db.clients(3)
    earlier = db.mailing(fanned_out=True)
    db.sent(earlier, [1], ago="10 minutes")
    running = db.mailing(fanned_out=True)
    receipt = db.mailing(fanned_out=True, transactional=True)
    for mailing_id in (running, receipt):
        db.q(
            "INSERT INTO message (mailing_id, client_id, status, token)"
            " SELECT %s, g, 'queued', g FROM generate_series(1, 2) g",
            [mailing_id],
        )
    db.q(
        "INSERT INTO message (mailing_id, is_test, phone, status, token)"
        " VALUES (%s, true, '79120000001', 'queued', 9)",
        [running],
    )
    # The cap comes after the fan-out: client 1 already had a message in the last hour.
    db.q("UPDATE mailing SET frequency_cap = '1/1h' WHERE id = %s", [running])
    rows = db.q("SELECT id, token, mailing_id FROM message WHERE status = 'queued' ORDER BY id")
    jobs = [Job(int(i), int(t), int(m)) for i, t, m in rows]
    async with sessions() as session:
        claimed = await store.claim(session, jobs, margin_s=1.0, lease_s=30.0, frequency_cap="1/1h")
    by_id = {c.message_id: c.status.value for c in claimed}
    assert sorted(by_id.values()) == ["cancelled", "sending", "sending", "sending", "sending"]
    assert db.messages(running) == {1: ("cancelled", FREQUENCY_CAP_REASON), 2: ("sending", None)}
    # The global cap holds the transactional mailing to nothing; the test send goes too.
    assert {s for s, _ in db.messages(receipt).values()} == {"sending"}
    assert db.q("SELECT status FROM message WHERE is_test") == [("sending",)]


async def test_a_fanout_waits_for_one_over_the_same_clients_and_sees_its_reservations(
    db: Db, sessions: async_sessionmaker[AsyncSession]
) -> None:
    db.clients(50)
    first = db.mailing(cap="1/24h")
    second = db.mailing(cap="1/24h")
    with database.connect(db.name) as other:
        # Another scheduler's chunk of `first`, under way: it holds the clients' block lock.
        other.execute("BEGIN")
        other.execute(fanout.LOCK_CLIENT_BLOCKS.text.replace(":low", "1").replace(":high", "50"))
        other.execute(
            "INSERT INTO message (mailing_id, client_id)"
            " SELECT %s, g FROM generate_series(1, 50) g",
            [first],
        )
        other.execute(
            "UPDATE mailing SET fanout_cursor = 50, fanout_done_at = now(),"
            " fanout_advanced_at = now() WHERE id = %s",
            [first],
        )
        task = asyncio.create_task(fan_out_all(sessions))

        async def waiting_for_the_lock() -> bool:
            rows = db.q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return rows[0][0] > 0

        await wait_until(waiting_for_the_lock, timeout=20, message="the fan-out to wait")
        assert not task.done()
        other.execute("COMMIT")
        await asyncio.wait_for(task, timeout=30)
    assert set(db.messages(second).values()) == {("cancelled", FREQUENCY_CAP_REASON)}
    assert len(db.messages(second)) == 50


async def test_two_mailings_fanning_out_at_once_keep_every_client_under_the_cap(
    db: Db, database_url: str
) -> None:
    db.clients(3000)
    mailings = [db.mailing(cap="2/24h") for _ in range(4)]
    engines = [
        create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=1))
        for _ in range(3)
    ]
    try:
        # Three schedulers, small chunks: the chunks of the four mailings interleave.
        await asyncio.gather(*(fan_out_all(create_session_factory(e), chunk=250) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    per_client = db.q(
        "SELECT client_id, count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE last_error = %s) FROM message GROUP BY 1",
        [FREQUENCY_CAP_REASON],
    )
    assert len(per_client) == 3000
    assert {(pending, capped) for _, pending, capped in per_client} == {(2, 2)}
    assert len(db.q("SELECT 1 FROM message WHERE mailing_id = ANY(%s)", [mailings])) == 12000
    assert set(db.counted().values()) == {2}


def test_the_lock_statement_is_its_own(db: Db) -> None:
    """A chunk over client ids 1..200000 locks blocks 0..3 of 2^16 ids."""
    with database.connect(db.name) as conn, conn.transaction():
        cur = conn.execute(
            fanout.LOCK_CLIENT_BLOCKS.text.replace(":low", "1").replace(":high", "200000")
        )
        assert cur.fetchone() == (4,)


async def test_retention_prunes_contacts_no_cap_counts(db: Db, database_url: str) -> None:
    from datetime import UTC, datetime

    from services.scheduler.retention import Retention

    db.clients(3)
    earlier = db.mailing(fanned_out=True)
    db.sent(earlier, [1], ago="20 days")
    db.sent(earlier, [2], ago="8 days")
    db.sent(earlier, [3], ago="1 hour")
    other = db.mailing(fanned_out=True)
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=1))
    try:
        # FREQUENCY_CAP's longest window is 10 days: the 20-day-old one goes.
        run = await Retention(
            engine, retention_days=None, frequency_cap="5/10d", clock=lambda: datetime.now(UTC)
        ).run()
        assert run.contact_rows_pruned == 1
        assert db.contacts() == {2: 1, 3: 1}
        # Without caps, a week is kept; a running mailing's own cap keeps its window.
        db.mailing(cap="1/30d")
        db.sent(other, [2], ago="20 days")
        run = await Retention(engine, retention_days=None).run()
        assert run.contact_rows_pruned == 0
        db.q("UPDATE mailing SET frequency_cap = NULL")
        run = await Retention(engine, retention_days=None).run()
        assert run.contact_rows_pruned == 2 and set(db.contacts()) == {3}  # 8 and 20 days old
    finally:
        await engine.dispose()
