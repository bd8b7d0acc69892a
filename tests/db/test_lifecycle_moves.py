"""Every status-changing statement, run against the real database, makes only moves that
`shared.domain.lifecycle.MOVES` allows to the mover it belongs to.

A row-level trigger, made for this test and dropped after it, logs each message's status
before and after every insert and update; each step runs one service function as the
services do (an AsyncSession) and its logged moves are checked against the table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.clients import service as clients
from services.api.mailings import resend, test_send
from services.api.principal import Actor, Role
from services.scheduler import fanout, leasing, sweep
from services.sender import store
from shared import receipts
from shared.db import create_engine, create_session_factory
from shared.domain.lifecycle import Mover, movers
from shared.domain.statuses import MessageStatus
from shared.messaging import Job
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.rows import insert_client, insert_clients, insert_mailing, insert_message

S = MessageStatus
LEASE_S = 30.0
ACTOR = Actor(name="ops", role=Role.ADMIN, kind="token")

LOG_MOVES = """
CREATE TABLE test_status_move (id bigserial PRIMARY KEY, before text, after text NOT NULL);
CREATE FUNCTION test_log_status_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO test_status_move (before, after) VALUES (NULL, NEW.status);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO test_status_move (before, after) VALUES (OLD.status, NEW.status);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_log_status_move AFTER INSERT OR UPDATE OF status ON message
    FOR EACH ROW EXECUTE FUNCTION test_log_status_move();
"""
UNLOG_MOVES = """
DROP TRIGGER IF EXISTS test_log_status_move ON message;
DROP FUNCTION IF EXISTS test_log_status_move();
DROP TABLE IF EXISTS test_status_move;
"""


@pytest.fixture(scope="module")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=2))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


class Db:
    def __init__(self, db_name: str) -> None:
        self.db_name = db_name

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with database.connect(self.db_name) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def mailing(self, *, status: str = "running", ends_in_s: float = 3600, **kw: Any) -> int:
        with database.connect(self.db_name) as conn:
            return insert_mailing(conn, status=status, ends_in_s=ends_in_s, fanout_done=True, **kw)

    def client(self) -> int:
        with database.connect(self.db_name) as conn:
            return insert_client(conn)

    def message(self, mailing_id: int, client_id: int | None = None, **columns: Any) -> int:
        with database.connect(self.db_name) as conn:
            client = client_id if client_id is not None else insert_client(conn)
            return insert_message(conn, mailing_id, client, **columns)

    def status(self, message_id: int) -> str:
        return str(self.execute("SELECT status FROM message WHERE id = %s", [message_id])[0][0])


@pytest.fixture
def db(clean_db: str) -> Iterator[Db]:
    db = Db(clean_db)
    db.execute(UNLOG_MOVES)
    db.execute(LOG_MOVES)
    try:
        yield db
    finally:
        db.execute(UNLOG_MOVES)


Step = Callable[[AsyncSession], Awaitable[object]]


async def test_every_status_change_is_a_move_of_the_lifecycle_table(
    db: Db, sessions: async_sessionmaker[AsyncSession]
) -> None:
    seen: set[Mover] = set()

    async def run(mover: Mover, step: Step) -> None:
        """Run one step on fresh rows; each move it makes must be `mover`'s in MOVES."""
        db.execute("DELETE FROM test_status_move")
        async with sessions() as session:
            await step(session)
        moves = db.execute("SELECT before, after FROM test_status_move ORDER BY id")
        assert moves, f"{mover}: the step moved no message"
        for before, after in moves:
            allowed = movers(S(before) if before is not None else None, S(after))
            assert mover in allowed, f"{mover} moved a message {before} -> {after}"
        seen.add(mover)

    def job(message_id: int, token: int, mailing_id: int) -> Job:
        return Job(message_id, token, mailing_id)

    # Fan-out, then the lease of what it made.
    with database.connect(db.db_name) as conn:
        insert_clients(conn, 3)
        fanning = insert_mailing(conn, status="running", started=True, fanout_done=False)
    db.execute(
        "UPDATE mailing SET fanout_max_client_id = (SELECT max(id) FROM client) WHERE id = %s",
        [fanning],
    )
    await run(Mover.FANOUT, lambda s: fanout.fanout_chunk(s, 100))
    await run(Mover.LEASE, lambda s: leasing.lease_due_messages(s, limit=10, ttl_s=LEASE_S))
    db.execute("UPDATE message SET status = 'sent', token = NULL, lease_until = NULL")

    # The reaper: lapsed leases of every kind are queued again.
    running = db.mailing()
    for status in (S.QUEUED, S.SENDING, S.RETRYING):
        db.message(running, status=status, token=7, lease_in_s=-1)
    await run(Mover.REAPER, lambda s: leasing.lease_due_messages(s, limit=10, ttl_s=LEASE_S))
    db.execute("UPDATE message SET status = 'sent', token = NULL, lease_until = NULL")

    # Leases whose jobs the broker refused: due again at once.
    db.message(running)
    refused: list[leasing.Lease] = []

    async def lease_then_refuse(session: AsyncSession) -> None:
        refused.extend(await leasing.lease_due_messages(session, limit=10, ttl_s=LEASE_S))
        db.execute("DELETE FROM test_status_move")  # only the return is this step's
        await leasing.return_unpublished(session, refused)

    await run(Mover.UNPUBLISHED, lease_then_refuse)
    db.execute("UPDATE message SET status = 'sent', token = NULL, lease_until = NULL")

    # The claim: sending, back to pending (paused), expired (ending), cancelled (deleted).
    paused = db.mailing(status="paused")
    ending = db.mailing(ends_in_s=1.0)
    stopped = db.mailing(status="cancelled")
    claims = [
        (db.message(running, status=S.QUEUED, token=1), 1, running),
        (db.message(running, status=S.RETRYING, token=2), 2, running),
        (db.message(paused, status=S.QUEUED, token=3), 3, paused),
        (db.message(ending, status=S.QUEUED, token=4), 4, ending),
        (db.message(stopped, status=S.QUEUED, token=5), 5, stopped),
    ]
    jobs = [job(*c) for c in claims]
    await run(Mover.CLAIM, lambda s: store.claim(s, jobs, margin_s=2.0, lease_s=LEASE_S))
    assert {db.status(c[0]) for c in claims} == {S.SENDING, S.PENDING, S.EXPIRED, S.CANCELLED}

    # Results: every outcome of a held message, and a delivery landing on an ended one.
    held = {
        status: db.message(running, status=S.SENDING, token=10 + i, lease_in_s=30)
        for i, status in enumerate(
            (S.SENT, S.RETRYING, S.FAILED, S.EXPIRED, S.PENDING, S.CANCELLED)
        )
    }
    late = {status: db.message(running, status=status) for status in (S.EXPIRED, S.CANCELLED)}
    results = [
        *(store.Result(m, running, 10 + i, status) for i, (status, m) in enumerate(held.items())),
        *(store.Result(m, running, 99, S.SENT) for m in late.values()),
    ]
    await run(Mover.RESULT, lambda s: store.write_results(s, results, lease_s=LEASE_S))
    assert all(db.status(m) == status for status, m in held.items())
    assert all(db.status(m) == S.SENT for m in late.values())

    # Release (breaker open), then the dead letters: expired in the queue, and poison.
    queued = db.message(running, status=S.QUEUED, token=20, lease_in_s=30)
    await run(Mover.RELEASE, lambda s: store.release(s, [job(queued, 20, running)], delay_s=1))
    assert db.status(queued) == S.PENDING
    dead = [
        job(db.message(ending, status=S.QUEUED, token=21), 21, ending),
        job(db.message(running, status=S.RETRYING, token=22), 22, running),
    ]
    await run(Mover.DEAD_LETTER, lambda s: store.dead_letter_expired(s, dead, margin_s=2.0))
    poison = [job(db.message(running, status=S.QUEUED, token=23), 23, running)]
    await run(Mover.DEAD_LETTER, lambda s: store.dead_letter_poison(s, poison, "poison"))

    # The sweep: a stopped mailing's messages cancelled, an ended one's expired.
    for status in (S.PENDING, S.QUEUED, S.RETRYING):
        db.message(stopped, status=status)
    db.message(stopped, status=S.SENDING, token=30, lease_in_s=-1)
    await run(Mover.SWEEP, lambda s: sweep.cancel_chunk(s, 100))
    ended = db.mailing(ends_in_s=-1)
    for status in (S.PENDING, S.QUEUED, S.RETRYING):
        db.message(ended, status=status)
    db.message(ended, status=S.SENDING, token=31, lease_in_s=-1)
    await run(Mover.SWEEP, lambda s: sweep.expire_chunk(s, 100))

    # Opt-out, and a client's delete, which cancels the same way.
    for opting in (True, False):
        client = db.client()
        # One message per mailing and client: a mailing for each.
        for status in (S.PENDING, S.QUEUED, S.RETRYING):
            db.message(db.mailing(), client, status=status)
        db.message(db.mailing(), client, status=S.SENDING, token=40, lease_in_s=-1)

        async def opt_out_or_delete(
            session: AsyncSession, client: int = client, opting: bool = opting
        ) -> None:
            if opting:
                changes: dict[str, object] = {"opted_out": True}
                await clients.update_client(session, client, changes, actor=ACTOR)
            else:
                await clients.delete_client(session, client, actor=ACTOR)

        await run(Mover.OPT_OUT, opt_out_or_delete)
        assert {
            db.status(m)
            for (m,) in db.execute("SELECT id FROM message WHERE client_id = %s", [client])
        } == {S.CANCELLED}

    # Delivery receipts: sent messages delivered and undelivered, matched by the provider's id.
    receipted = db.mailing()
    for i in range(2):
        db.execute(
            "UPDATE message SET provider = 'agg', provider_message_id = %s WHERE id = %s",
            [f"r{i}", db.message(receipted, status=S.SENT)],
        )
    await run(
        Mover.RECEIPT,
        lambda s: receipts.apply_receipts(
            s, [receipts.Receipt("agg", "r0", True), receipts.Receipt("agg", "r1", False)]
        ),
    )

    # An admin's retry of the failed messages.
    retried = db.mailing()
    failed = db.message(retried, status=S.FAILED)
    await run(Mover.RETRY_FAILED, lambda s: resend.retry_failed(s, retried, actor=ACTOR))
    assert db.status(failed) == S.PENDING

    # Test sends: made, leased, then past their deadline expired by the sweep.
    await run(
        Mover.TEST_SEND,
        lambda s: test_send.send_test(s, paused, "79990000001", actor=ACTOR, per_minute=10),
    )
    await run(Mover.TEST_LEASE, lambda s: leasing.lease_test_sends(s, limit=10, ttl_s=LEASE_S))
    db.execute(
        "UPDATE message SET created_at = now() - interval '30 days', lease_until = now()"
        " WHERE is_test"
    )
    await run(Mover.SWEEP, lambda s: sweep.expire_test_sends(s, 100))

    assert seen == set(Mover), f"no step for {set(Mover) - seen}"
