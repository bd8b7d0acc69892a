"""The status counters: exact at every commit, and no writer of a mailing waits on another's.

Before migration 0009 every status-changing statement upserted the same `message_count` rows
of its mailing, so a transaction that changed one message held those rows until it committed
and every other writer of the mailing (claims, results, leases, the sweep) queued behind it:
the soak's stall. Now each statement appends its deltas; nothing is shared but the table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import database
from tests.support.rows import insert_client, insert_mailing, insert_messages

BY_GROUP = (
    "SELECT status, count(*) FROM message WHERE mailing_id = %s AND NOT is_test"
    " GROUP BY status ORDER BY status"
)
COUNTED = (
    "SELECT status, count FROM message_count WHERE mailing_id = %s AND count <> 0 ORDER BY status"
)


@pytest.fixture
def mailing(clean_db: str) -> tuple[str, int]:
    with database.connect(clean_db) as conn:
        mailing_id = insert_mailing(conn, status="running", text="x", started=True)
        insert_messages(conn, mailing_id, [insert_client(conn) for _ in range(50)])
    return clean_db, mailing_id


def connect(db: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database._server_dsn(db))
    conn.execute("SET lock_timeout = '2s'")  # a wait fails the test instead of hanging it
    return conn


def test_a_writer_holding_its_transaction_open_blocks_no_other_writer(
    mailing: tuple[str, int],
) -> None:
    db, mailing_id = mailing
    with connect(db) as holder, connect(db) as other:
        holder.execute(
            "UPDATE message SET status = 'queued' WHERE mailing_id = %s"
            " AND id = (SELECT min(id) FROM message WHERE mailing_id = %s)",
            [mailing_id, mailing_id],
        )
        # Same mailing, same statuses, other rows: under 0008 this waited for `holder`.
        other.execute(
            "UPDATE message SET status = 'queued' WHERE mailing_id = %s"
            " AND id = (SELECT max(id) FROM message WHERE mailing_id = %s)",
            [mailing_id, mailing_id],
        )
        other.execute(
            "UPDATE message SET status = 'sent' WHERE mailing_id = %s AND status = 'pending'"
            " AND id > (SELECT min(id) FROM message WHERE mailing_id = %s)",
            [mailing_id, mailing_id],
        )
        other.commit()
        # Exact at every commit: what `other` committed is counted, `holder`'s not yet.
        assert other.execute(COUNTED, [mailing_id]).fetchall() == [
            ("pending", 1),
            ("queued", 1),
            ("sent", 48),
        ]
        assert (
            other.execute(COUNTED, [mailing_id]).fetchall()
            == other.execute(BY_GROUP, [mailing_id]).fetchall()
        )
        holder.commit()
        assert other.execute(COUNTED, [mailing_id]).fetchall() == [("queued", 2), ("sent", 48)]


def test_folding_keeps_the_counts_and_empties_the_deltas(mailing: tuple[str, int]) -> None:
    db, mailing_id = mailing
    with database.connect(db) as conn:
        for status in ("queued", "sending", "sent"):
            conn.execute(
                "UPDATE message SET status = %s WHERE mailing_id = %s AND id %% 2 = 0",
                [status, mailing_id],
            )
        before = conn.execute(COUNTED, [mailing_id]).fetchall()
        assert conn.execute("SELECT count(*) FROM message_count_delta").fetchone()[0] > 0  # type: ignore[index]
        folded = conn.execute("SELECT message_count_fold()").fetchone()[0]  # type: ignore[index]
        assert folded > 0
        assert conn.execute("SELECT count(*) FROM message_count_delta").fetchone()[0] == 0  # type: ignore[index]
        assert conn.execute(COUNTED, [mailing_id]).fetchall() == before
        assert before == conn.execute(BY_GROUP, [mailing_id]).fetchall()
        # The per-minute counts take the statuses' net entries.
        minute = conn.execute(
            "SELECT status, count FROM message_minute WHERE mailing_id = %s", [mailing_id]
        ).fetchall()
        assert minute == [("sent", 25)]


def test_a_statement_that_changes_no_status_writes_no_delta(mailing: tuple[str, int]) -> None:
    db, mailing_id = mailing
    with database.connect(db) as conn:
        conn.execute("SELECT message_count_fold()")
        conn.execute("UPDATE message SET updated_at = now() WHERE mailing_id = %s", [mailing_id])
        assert conn.execute("SELECT count(*) FROM message_count_delta").fetchone()[0] == 0  # type: ignore[index]
