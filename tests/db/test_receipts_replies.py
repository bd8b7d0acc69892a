"""shared.receipts and shared.replies against the real database: receipts matched once, early
ones kept until their message is known, unknown ones dropped after the hold; replies stored
with their client and mailing, an exact stop word opting the client out with an audit entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import create_engine, create_session_factory
from shared.domain.stop_words import DEFAULT_STOP_WORDS
from shared.receipts import Receipt, ReceiptCounts, apply_receipts, match_pending
from shared.replies import Reply, record_replies
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.rows import insert_client, insert_mailing, insert_message


@pytest.fixture(scope="module")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(BaseServiceSettings(database_url=database_url, db_pool_size=2))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


def q(db: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with database.connect(db) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def sent_message(db: str, mailing: int, provider: str, provider_id: str | None) -> int:
    with database.connect(db) as conn:
        message = insert_message(conn, mailing, insert_client(conn), status="sent")
        conn.execute(
            "UPDATE message SET provider = %s, provider_message_id = %s WHERE id = %s",
            [provider, provider_id, message],
        )
    return message


def status(db: str, message: int) -> tuple[str, str | None]:
    row = q(db, "SELECT status, last_error FROM message WHERE id = %s", [message])[0]
    return str(row[0]), row[1]


async def test_receipts_match_once_and_early_ones_wait(
    clean_db: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with database.connect(clean_db) as conn:
        mailing = insert_mailing(conn, status="running")
    ok = sent_message(clean_db, mailing, "agg", "100")
    bad = sent_message(clean_db, mailing, "agg", "101")
    other_provider = sent_message(clean_db, mailing, "gw", "100")
    async with sessions() as s:
        counts = await apply_receipts(
            s,
            [
                Receipt("agg", "100", True),
                Receipt("agg", "101", False, "UNDELIV err:011"),
                Receipt("agg", "101", False, "UNDELIV err:011"),  # twice in one batch
                Receipt("agg", "555", True),  # its message's id is not written yet
            ],
        )
    assert counts == ReceiptCounts(matched=2, early=1, duplicate=1)
    assert status(clean_db, ok) == ("delivered", None)
    assert status(clean_db, bad) == ("undelivered", "UNDELIV err:011")
    assert status(clean_db, other_provider) == ("sent", None)  # ids are per provider

    # Again, later: the messages have their receipts; the early one is kept once.
    async with sessions() as s:
        again = await apply_receipts(s, [Receipt("agg", "100", False), Receipt("agg", "555", True)])
    assert again == ReceiptCounts(matched=0, early=0, duplicate=2)
    assert status(clean_db, ok) == ("delivered", None)

    # The sender's write of id 555 lands: the pending receipt applies; an unknown one is dropped
    # after the hold, not before.
    late = sent_message(clean_db, mailing, "agg", "555")
    async with sessions() as s:
        await apply_receipts(s, [Receipt("agg", "999", True)])
        assert await match_pending(s, hold_s=3600) == (1, 0)
    assert status(clean_db, late) == ("delivered", None)
    assert q(clean_db, "SELECT provider_message_id FROM message_receipt_pending") == [("999",)]
    q(clean_db, "UPDATE message_receipt_pending SET received_at = now() - interval '2 hours'")
    async with sessions() as s:
        assert await match_pending(s, hold_s=3600) == (0, 1)
    assert q(clean_db, "SELECT count(*) FROM message_receipt_pending") == [(0,)]

    # The status counters (message_count view) count the new statuses.
    counts_by_status = dict(
        q(clean_db, "SELECT status, count FROM message_count WHERE mailing_id = %s", [mailing])
    )
    assert counts_by_status == {"delivered": 2, "undelivered": 1, "sent": 1}


async def test_replies_are_kept_and_an_exact_stop_word_opts_out(
    clean_db: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with database.connect(clean_db) as conn:
        older = insert_mailing(conn, status="running")
        newer = insert_mailing(conn, status="running")
        stopper, talker = insert_client(conn), insert_client(conn)
        insert_message(conn, older, stopper, status="sent")
        insert_message(conn, older, talker, status="sent")
        pending = insert_message(conn, newer, stopper, status="pending")
    phones = dict(q(clean_db, "SELECT id, phone FROM client"))
    async with sessions() as s:
        stored = await record_replies(
            s,
            [
                Reply("agg", "+" + phones[stopper], "  стоп "),
                Reply("agg", phones[talker], "please don't stop"),
                Reply("agg", "79990000000", "STOP"),  # nobody's phone: kept, opts nobody out
            ],
            DEFAULT_STOP_WORDS,
        )
    assert stored == 3
    rows = q(clean_db, "SELECT phone, client_id, mailing_id, stop FROM message_reply ORDER BY id")
    assert rows == [
        (phones[stopper], stopper, newer, True),
        (phones[talker], talker, older, False),
        ("79990000000", None, None, True),
    ]
    opted = dict(q(clean_db, "SELECT id, opted_out_at IS NOT NULL FROM client"))
    assert opted == {stopper: True, talker: False}
    assert status(clean_db, pending) == ("cancelled", "opted out")
    audit = q(clean_db, "SELECT actor_name, actor_kind, target_id, changes FROM audit_log")
    assert len(audit) == 1
    assert audit[0][:3] == ("sms:agg", "token", str(stopper))
    assert audit[0][3]["opted_out"] == {"old": False, "new": True}
    assert audit[0][3]["messages_cancelled"] == 1

    # A second STOP from an opted-out client is kept, and changes nothing else.
    async with sessions() as s:
        assert await record_replies(s, [Reply("agg", phones[stopper], "STOP")], ["STOP"]) == 1
    assert q(clean_db, "SELECT count(*) FROM audit_log") == [(1,)]
