"""`message` partitioned by mailing id (migration 0007) and message retention, on real PostgreSQL.

- the upgrade from 0006 on a populated table keeps every row, id and counter, and the old
  table becomes the first partition; the downgrade folds the partitions back into one table;
- every new mailing gets its partition; the counter triggers (statement-level, with
  transition tables) work on the partitioned table across partitions; the fan-out's
  uniqueness still holds;
- retention drops only the partitions whose mailings all finished long enough ago (by an
  injected clock), leaves running and scheduled mailings and their blocks alone, and a
  dropped partition leaves the statistics (`message_count`) as they were.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler import fanout
from services.scheduler.retention import Retention, parse_bound, partitions
from shared.db import create_engine, create_session_factory
from shared.domain.retention import finished_at, finished_at_sql
from shared.settings import BaseServiceSettings
from tests.support import database
from tests.support.waiting import wait_until

COUNTERS = "SELECT mailing_id, status, count FROM message_count WHERE count <> 0 ORDER BY 1, 2"
BY_GROUP = (
    "SELECT mailing_id, status, count(*) FROM message WHERE NOT is_test GROUP BY 1, 2 ORDER BY 1, 2"
)
ALL_ROWS = "SELECT * FROM message ORDER BY id"


@pytest.fixture
def fresh_db() -> Iterator[str]:
    name = database.create_database("mailing_partitions")
    try:
        yield name
    finally:
        database.drop_database(name)


def q(name: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with database.connect(name) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def partition_names(name: str) -> list[str]:
    return [
        r[0]
        for r in q(
            name,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'message'::regclass ORDER BY c.relname",
        )
    ]


def seed_old_schema(name: str) -> None:
    """At 0006: clients, three mailings, messages in every status and a test send."""
    q(
        name,
        "INSERT INTO client (phone, operator_code, timezone)"
        " SELECT '7912' || lpad(g::text, 7, '0'), '912', 'UTC' FROM generate_series(1, 300) g",
    )
    q(
        name,
        "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_done_at)"
        " SELECT now() - interval '1 hour', now() + interval '1 hour', 'm' || g, 'running',"
        " now(), now() FROM generate_series(1, 3) g",
    )
    q(
        name,
        "INSERT INTO message (mailing_id, client_id, status, attempts)"
        " SELECT mg, c, (ARRAY['pending','queued','sending','sent','retrying','failed',"
        "'expired','cancelled'])[1 + c % 8], c % 3"
        " FROM generate_series(1, 3) mg, generate_series(1, 300) c",
    )
    q(
        name,
        "INSERT INTO message (mailing_id, phone, is_test, status)"
        " VALUES (2, '79990000000', true, 'sent')",
    )
    # A status change in one statement, so the counters have moved by trigger too.
    q(name, "UPDATE message SET status = 'sent' WHERE mailing_id = 3 AND status = 'pending'")


def test_upgrade_keeps_every_row_and_counter(fresh_db: str) -> None:
    database.migrate(fresh_db, "0006")
    seed_old_schema(fresh_db)
    rows, counters = q(fresh_db, ALL_ROWS), q(fresh_db, COUNTERS)
    assert counters == q(fresh_db, BY_GROUP)
    highest = q(fresh_db, "SELECT max(id) FROM message")[0][0]

    database.migrate(fresh_db)

    # Later migrations add columns at the end (0015: provider, provider_message_id), empty.
    after = q(fresh_db, ALL_ROWS)
    width = len(rows[0])
    assert [row[:width] for row in after] == rows
    assert {row[width:] for row in after} == {(None,) * (len(after[0]) - width)}
    assert q(fresh_db, COUNTERS) == counters
    assert q(fresh_db, "SELECT relkind FROM pg_class WHERE relname = 'message'") == [("p",)]
    assert partition_names(fresh_db) == ["message_legacy"]
    # The old rows are the legacy partition's: not one was copied.
    assert q(fresh_db, "SELECT count(*) FROM ONLY message_legacy")[0][0] == len(rows)
    # Mailing ids a little above today's stay in it (mailings created during the migration).
    bound = parse_bound(
        q(
            fresh_db,
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'message_legacy'",
        )[0][0]
    )
    assert bound[1] > 1000

    # New messages continue the id sequence, and the triggers count on the new table.
    q(fresh_db, "INSERT INTO message (mailing_id, client_id) VALUES (1, 301)")
    assert q(fresh_db, "SELECT max(id) FROM message")[0][0] == highest + 1
    assert q(fresh_db, COUNTERS) == q(fresh_db, BY_GROUP)
    # The old key (id) is now (id, mailing_id); ids stay unique by the one sequence.
    key = q(
        fresh_db,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_message'",
    )
    assert key == [("PRIMARY KEY (id, mailing_id)",)]


def test_downgrade_folds_partitions_back(fresh_db: str) -> None:
    database.migrate(fresh_db, "0006")
    seed_old_schema(fresh_db)
    database.migrate(fresh_db)
    # Mailings 4..250: their partitions p1, p101 (from the legacy bound up) and beyond.
    q(fresh_db, "SELECT setval(pg_get_serial_sequence('mailing', 'id'), 1100)")
    q(
        fresh_db,
        "INSERT INTO mailing (start_at, end_at, text) SELECT now(), now() + interval '1 hour',"
        " 'x' FROM generate_series(1, 150)",
    )
    assert len(partition_names(fresh_db)) == 3  # legacy, p1101, p1201
    q(
        fresh_db,
        "INSERT INTO message (mailing_id, client_id)"
        " SELECT mg, 1 FROM generate_series(1101, 1250) mg",
    )
    rows, counters = q(fresh_db, ALL_ROWS), q(fresh_db, COUNTERS)

    database.downgrade(fresh_db, "0006")

    assert q(fresh_db, "SELECT relkind FROM pg_class WHERE relname = 'message'") == [("r",)]
    # Without the columns later migrations added at the end (0015's, all empty here).
    after = q(fresh_db, ALL_ROWS)
    assert after == [row[: len(after[0])] for row in rows]
    assert q(fresh_db, COUNTERS) == counters
    assert not q(fresh_db, "SELECT relname FROM pg_class WHERE relname ~ '^message_(legacy|p)'")
    key = q(
        fresh_db,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_message'",
    )
    assert key == [("PRIMARY KEY (id)",)]
    q(fresh_db, "INSERT INTO message (mailing_id, client_id) VALUES (1101, 2)")
    assert q(fresh_db, "SELECT max(id) FROM message")[0][0] == max(r[0] for r in rows) + 1
    assert q(fresh_db, COUNTERS) == q(fresh_db, BY_GROUP)

    database.migrate(fresh_db)  # and up again
    assert q(fresh_db, COUNTERS) == q(fresh_db, BY_GROUP)


def test_every_mailing_gets_its_partition_and_triggers_count_across_them(db_name: str) -> None:
    database.truncate_all(db_name)
    q(
        db_name,
        "INSERT INTO client (phone, operator_code, timezone)"
        " SELECT '7912' || lpad(g::text, 7, '0'), '912', 'UTC' FROM generate_series(1, 50) g",
    )
    q(
        db_name,
        "INSERT INTO mailing (start_at, end_at, text) SELECT now(), now() + interval '1 hour',"
        " 'x' FROM generate_series(1, 250)",
    )
    names = set(partition_names(db_name))
    assert {"message_p1", "message_p101", "message_p201"} <= names
    # One INSERT and one UPDATE spanning three partitions: one trigger call each, all counted.
    q(
        db_name,
        "INSERT INTO message (mailing_id, client_id)"
        " SELECT mg, c FROM unnest(ARRAY[5, 150, 250]) mg, generate_series(1, 50) c",
    )
    q(
        db_name,
        "UPDATE message SET status = 'sent' WHERE client_id <= 20 AND mailing_id IN (5, 150, 250)",
    )
    assert q(db_name, COUNTERS) == q(db_name, BY_GROUP)
    assert q(db_name, COUNTERS) == [
        (mg, status, n) for mg in (5, 150, 250) for status, n in (("pending", 30), ("sent", 20))
    ]
    # The per-minute counts come with the scheduler's fold (about every second).
    q(db_name, "SELECT message_count_fold()")
    assert q(db_name, COUNTERS) == q(db_name, BY_GROUP)
    minute = q(db_name, "SELECT mailing_id, status, count FROM message_minute ORDER BY 1")
    assert minute == [(5, "sent", 20), (150, "sent", 20), (250, "sent", 20)]
    q(db_name, "DELETE FROM message WHERE mailing_id = 150 AND status = 'sent'")
    assert q(db_name, COUNTERS) == q(db_name, BY_GROUP)
    # Ensuring is idempotent and names the existing partition.
    assert q(db_name, "SELECT message_partition_ensure(150)::text") == [("message_p101",)]
    # The fan-out's uniqueness (mailing_id, client_id) holds in the partitioned table.
    again = q(
        db_name,
        "INSERT INTO message (mailing_id, client_id) SELECT 250, c FROM generate_series(1, 60) c"
        " ON CONFLICT (mailing_id, client_id) DO NOTHING RETURNING client_id",
    )
    assert sorted(r[0] for r in again) == list(range(51, 61))
    with pytest.raises(psycopg.errors.UniqueViolation):
        q(db_name, "INSERT INTO message (mailing_id, client_id) VALUES (250, 1)")


@pytest.fixture
async def engine(fresh_db: str) -> AsyncIterator[AsyncEngine]:
    database.migrate(fresh_db)
    engine = create_engine(
        BaseServiceSettings(database_url=database.sqlalchemy_url(fresh_db), db_pool_size=2)
    )
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_fanout_twice_creates_each_message_once(engine: AsyncEngine, fresh_db: str) -> None:
    q(
        fresh_db,
        "INSERT INTO client (phone, operator_code, timezone)"
        " SELECT '7912' || lpad(g::text, 7, '0'), '912', 'UTC' FROM generate_series(1, 500) g",
    )
    q(
        fresh_db,
        "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_cursor,"
        " fanout_max_client_id) VALUES (now(), now() + interval '1 hour', 'x', 'running', now(),"
        " 0, 500)",
    )
    q(fresh_db, "DROP TABLE message_p1")  # as if the insert trigger had given up
    sessions = create_session_factory(engine)
    async with sessions() as session:
        first = await fanout.fanout_chunk(session, 20_000)
    assert first is not None and first.created == 500 and first.done
    assert "message_p1" in partition_names(fresh_db)  # the first chunk created it
    q(fresh_db, "UPDATE mailing SET fanout_cursor = 0, fanout_done_at = NULL")
    async with sessions() as session:
        second = await fanout.fanout_chunk(session, 20_000)
    assert second is not None and second.created == 0
    assert q(fresh_db, "SELECT count(*) FROM message")[0][0] == 500


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def seed_for_retention(name: str) -> None:
    """Blocks of 100 mailing ids: 1..100 all finished 10 days ago (one cancelled, one deleted),
    101..200 finished 10 days ago but for one running mailing, 201..300 one finished 1 day ago,
    301..: a finished mailing in the block still being filled."""
    q(
        name,
        "INSERT INTO client (phone, operator_code, timezone) VALUES ('79120000001', '912', 'UTC')",
    )
    q(
        name,
        "INSERT INTO mailing (start_at, end_at, text, status, started_at, completed_at,"
        " updated_at) SELECT %(old)s, %(old)s + interval '1 hour', 'x', 'completed', %(old)s,"
        " %(old)s, %(old)s FROM generate_series(1, 305)",
        {"old": NOW - timedelta(days=10)},
    )
    q(name, "UPDATE mailing SET status = 'cancelled', completed_at = NULL WHERE id = 7")
    q(name, "UPDATE mailing SET deleted_at = updated_at WHERE id = 8")
    q(name, "UPDATE mailing SET status = 'running', completed_at = NULL WHERE id = 150")
    q(
        name,
        "UPDATE mailing SET completed_at = %(t)s, updated_at = %(t)s WHERE id = 250",
        {"t": NOW - timedelta(days=1)},
    )
    q(name, "INSERT INTO message (mailing_id, client_id, status) SELECT id, 1, 'sent' FROM mailing")
    q(name, "UPDATE message SET status = 'pending' WHERE mailing_id = 150")
    q(
        name,
        "INSERT INTO message_minute (minute, mailing_id, status, count) VALUES"
        " (%(old)s, 1, 'sent', 5), (%(recent)s, 250, 'sent', 7)",
        {"old": NOW - timedelta(days=3), "recent": NOW - timedelta(hours=30)},
    )


async def test_retention_drops_only_finished_blocks(engine: AsyncEngine, fresh_db: str) -> None:
    seed_for_retention(fresh_db)
    counters = q(fresh_db, COUNTERS)
    assert {"message_p1", "message_p101", "message_p201", "message_p301"} <= set(
        partition_names(fresh_db)
    )

    kept = await Retention(engine, retention_days=None, clock=lambda: NOW).run()
    assert kept.dropped == []  # unset: every message is kept
    assert kept.minute_rows_pruned == 1  # but the dashboard's old minutes go
    assert q(fresh_db, "SELECT mailing_id FROM message_minute") == [(250,)]

    run = await Retention(engine, retention_days=2.5, clock=lambda: NOW).run()

    # The empty legacy partition of a fresh install and block 1..100 go; block 101..200 keeps
    # its running mailing, 201..300 one finished a day ago, 301.. is still being filled.
    assert sorted(run.dropped or []) == ["message_legacy", "message_p1"]
    assert run.messages_dropped == 100
    assert set(partition_names(fresh_db)) == {"message_p101", "message_p201", "message_p301"}
    assert q(fresh_db, "SELECT min(mailing_id), count(*) FROM message") == [(101, 205)]
    # The statistics of the dropped mailings are untouched: DROP fires no delete trigger.
    assert q(fresh_db, COUNTERS) == counters
    assert q(fresh_db, "SELECT status FROM mailing WHERE id = 150") == [("running",)]

    # A day and a half later the 1..100 block's neighbour with the day-old mailing goes too.
    later = await Retention(
        engine, retention_days=1.0, clock=lambda: NOW + timedelta(hours=36)
    ).run()
    assert later.dropped == ["message_p201"]
    assert q(fresh_db, COUNTERS) == counters

    # Once the running one finishes (and long enough ago), its block goes as well.
    q(fresh_db, "UPDATE message SET status = 'sent' WHERE mailing_id = 150")
    q(
        fresh_db,
        "UPDATE mailing SET status = 'completed', completed_at = %(t)s, updated_at = %(t)s"
        " WHERE id = 150",
        {"t": NOW},
    )
    last = await Retention(engine, retention_days=1.0, clock=lambda: NOW + timedelta(days=2)).run()
    assert last.dropped == ["message_p101"]
    assert set(partition_names(fresh_db)) == {"message_p301"}
    # A new mailing still gets its partition and its messages.
    q(
        fresh_db,
        "INSERT INTO mailing (start_at, end_at, text)"
        " VALUES (now(), now() + interval '1 hour', 'y')",
    )
    q(fresh_db, "INSERT INTO message (mailing_id, client_id) VALUES (306, 1)")


async def test_retention_puts_back_a_partition_whose_mailing_came_back(
    engine: AsyncEngine, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailing of the block revived between the look and the detach: re-attached whole."""
    seed_for_retention(fresh_db)
    retention = Retention(engine, retention_days=2.5, clock=lambda: NOW)
    looks: list[bool] = []
    original = Retention._droppable

    async def droppable(conn: Any, partition: Any, cutoff: datetime) -> bool:
        if partition.name != "message_p1":
            return False
        looks.append(True)
        if len(looks) == 2:  # between the first look and the second, mailing 5 runs again
            q(fresh_db, "UPDATE mailing SET status = 'running' WHERE id = 5")
        return await original(conn, partition, cutoff)

    monkeypatch.setattr(Retention, "_droppable", staticmethod(droppable))
    q(fresh_db, "UPDATE mailing SET status = 'completed' WHERE id = 5")
    run = await retention.run()
    assert run.dropped == []
    assert "message_p1" in partition_names(fresh_db)
    assert q(fresh_db, "SELECT count(*) FROM message WHERE mailing_id <= 100")[0][0] == 100


def test_finished_at_python_and_sql_agree(db_name: str) -> None:
    moments = [NOW - timedelta(days=d) for d in (1, 2, 3)]
    with database.connect(db_name) as conn:
        for status in ("scheduled", "running", "paused", "completed", "cancelled"):
            for completed, deleted in [
                (None, None),
                (moments[0], None),
                (None, moments[2]),
                (moments[1], moments[0]),
            ]:
                sql_value = conn.execute(
                    f"SELECT {finished_at_sql('m')} FROM (SELECT %s::text AS status,"
                    " %s::timestamptz AS completed_at, %s::timestamptz AS deleted_at,"
                    " %s::timestamptz AS updated_at) m",
                    [status, completed, deleted, moments[2]],
                ).fetchone()[0]  # type: ignore[index]
                assert sql_value == finished_at(
                    status, completed_at=completed, deleted_at=deleted, updated_at=moments[2]
                )


async def test_partition_list_reads_the_bounds(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        found = await partitions(conn)
    assert [(p.name, p.high) for p in found] == [("message_legacy", 1)]
    assert parse_bound("FOR VALUES FROM ('101') TO ('201')") == (101, 201)


async def test_a_fanout_that_grew_its_partition_analyzes_it(
    engine: AsyncEngine, fresh_db: str
) -> None:
    """Stale statistics of a fast-grown partition made the senders' lookups by id scan every
    message of the mailing (services/scheduler/fanout.py): the fan-out analyzes it."""
    clients = fanout.ANALYZE_MIN_CHANGED + 500
    q(
        fresh_db,
        "INSERT INTO client (phone, operator_code, timezone) SELECT '79' || lpad(g::text, 9,"
        " '0'), '912', 'UTC' FROM generate_series(1, %s) g",
        [clients],
    )
    q(
        fresh_db,
        "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_cursor,"
        " fanout_max_client_id, fanout_advanced_at) VALUES (now(), now() + interval '1 hour',"
        " 'x', 'running', now(), 0, %s, now())",
        [clients],
    )
    sessions = create_session_factory(engine)

    def last_analyze() -> list[tuple[Any, ...]]:
        return q(
            fresh_db,
            "SELECT last_analyze, n_mod_since_analyze FROM pg_stat_user_tables"
            " WHERE relname = 'message_p1'",
        )

    async with sessions() as session:
        chunk = await fanout.fanout_chunk(session, 20_000)
    assert chunk is not None and chunk.created == clients and chunk.done

    # The chunk's own counts reach the statistics views at most a second after its commit
    # (PostgreSQL batches them); until they do the partition does not look grown.
    async def grown() -> bool:
        return last_analyze()[0][1] >= clients

    await wait_until(grown, timeout=10, message="the fan-out's inserts in pg_stat_user_tables")
    if chunk.analyzed is None:
        async with sessions() as session:
            assert await fanout.analyze_if_grown(session, chunk.mailing_id) == "message_p1"
    [(analyzed_at, changed)] = last_analyze()
    assert analyzed_at is not None and changed == 0
    assert q(fresh_db, "SELECT reltuples FROM pg_class WHERE relname = 'message_p1'")[0][0] == (
        clients
    )
    # Analyzed now: nothing more to do until it doubles again.
    async with sessions() as session:
        assert await fanout.analyze_if_grown(session, chunk.mailing_id) is None
