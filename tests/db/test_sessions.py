"""Server-side session limits every service's engine sets."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.waiting import wait_until


async def test_a_session_frozen_inside_a_transaction_frees_its_locks(
    database_url: str, clean_db: str
) -> None:
    """A process stopped between a statement and its commit (SIGSTOP, a VM pause) must not
    block the counter rows every other replica's status change touches."""
    settings = BaseServiceSettings(
        database_url=database_url, db_idle_in_transaction_timeout_ms=300, db_pool_size=2
    )
    engine = create_engine(settings)
    try:
        with database.connect(clean_db) as conn:
            conn.execute(
                "INSERT INTO mailing (id, start_at, end_at, text) "
                "VALUES (1, now(), now() + interval '1 hour', 't')"
            )
            conn.execute(
                "INSERT INTO message_count_folded (mailing_id, status, count) VALUES (1, 'sent', 0)"
            )
        frozen = await engine.connect()
        await frozen.begin()
        await frozen.execute(
            text("UPDATE message_count_folded SET count = count + 1 WHERE mailing_id = 1")
        )
        # The "frozen" connection now sits idle in its transaction, holding the row lock.

        async def other_replica_writes() -> bool:
            with database.connect(clean_db) as conn:
                conn.execute("SET lock_timeout = '200ms'")
                try:
                    conn.execute(
                        "UPDATE message_count_folded SET count = count + 10 WHERE mailing_id = 1"
                    )
                except psycopg.errors.LockNotAvailable:  # still held by the frozen session
                    return False
            return True

        await wait_until(other_replica_writes, timeout=10, message="the lock to be freed")
        with database.connect(clean_db) as conn:
            row = conn.execute(
                "SELECT count FROM message_count_folded WHERE mailing_id = 1"
            ).fetchone()
        assert row is not None and row[0] == 10  # the frozen transaction was rolled back
        # Its process, thawed, finds the session gone: the commit fails, nothing half-written.
        with pytest.raises(DBAPIError):
            await frozen.commit()
        await frozen.close()
    finally:
        await engine.dispose()
