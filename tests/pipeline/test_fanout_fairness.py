"""Fan-out fairness: a small mailing started during a big fan-out gets its messages at once,
and several schedulers share fan-outs without gaps or duplicates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.scheduler.fanout import FIRST_CHUNK_SIZE
from tests.pipeline.conftest import Pipeline
from tests.support import database
from tests.support.rig.processes import ServiceProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

CHUNK = 2_000
BIG = 100_000


def fanout_row(pipeline: Pipeline, mailing_id: int) -> dict[str, Any]:
    with database.connect(pipeline.db_name) as conn:
        row = conn.execute(
            """
            SELECT fanout_done_at, fanout_cursor, fanout_max_client_id,
                   (SELECT count(*) FROM message WHERE mailing_id = mailing.id) AS rows,
                   (SELECT max(id) FROM message WHERE mailing_id = mailing.id) AS last_id
            FROM mailing WHERE id = %s
            """,
            [mailing_id],
        ).fetchone()
    assert row is not None
    keys = ("fanout_done_at", "fanout_cursor", "fanout_max_client_id", "rows", "last_id")
    return dict(zip(keys, row, strict=True))


def chunks_logged(*schedulers: ServiceProcess) -> list[dict[str, Any]]:
    """The scheduler's "fan-out chunk" log lines, in the order each process wrote them."""
    out = []
    for proc in schedulers:
        for line in proc.log_text().splitlines():
            if '"fan-out chunk"' in line:
                out.append(json.loads(line))
    return out


async def test_a_small_mailing_gets_its_messages_while_a_big_one_fans_out(
    pipeline: Pipeline,
) -> None:
    pipeline.seed_clients(BIG, tag="big")
    pipeline.seed_clients(100, tag="small", first=BIG + 1)
    pipeline.set_faults(latency_ms=20)
    scheduler = pipeline.start_scheduler(fanout_chunk_size=CHUNK)
    sender = pipeline.start_sender(max_connections=20)
    await scheduler.wait_ready()
    await sender.wait_ready()

    big = await pipeline.create_mailing(tags=["big"])

    async def big_fanning_out() -> bool:
        return int(fanout_row(pipeline, big["id"])["rows"]) >= FIRST_CHUNK_SIZE + CHUNK

    await wait_until(big_fanning_out, timeout=30, message="the big fan-out under way")
    small = await pipeline.create_mailing(tags=["small"])
    # Otherwise this test shows nothing: the big fan-out must still be going on.
    assert fanout_row(pipeline, big["id"])["fanout_done_at"] is None, "big fan-out too quick"

    async def small_fanned_out() -> dict[str, Any] | None:
        row = fanout_row(pipeline, small["id"])
        return row if row["fanout_done_at"] is not None else None

    small_row = await wait_until(small_fanned_out, timeout=30, message="the small fan-out")
    assert small_row is not None
    assert small_row["rows"] == 100

    async def big_fanned_out() -> bool:
        return fanout_row(pipeline, big["id"])["fanout_done_at"] is not None

    await wait_until(big_fanned_out, timeout=120, message="the big fan-out done")
    big_row = fanout_row(pipeline, big["id"])
    assert big_row["rows"] == BIG
    # Message ids follow insertion order: the big mailing got rows after the small one's last.
    assert big_row["last_id"] > small_row["last_id"]
    assert big_row["fanout_done_at"] > small_row["fanout_done_at"]
    with database.connect(pipeline.db_name) as conn:
        later = conn.execute(
            "SELECT count(*) FROM message WHERE mailing_id = %s AND id > %s",
            [big["id"], small_row["last_id"]],
        ).fetchone()
    assert later is not None
    print(f"big mailing rows created after the small one's: {later[0]} of {BIG}")
    assert later[0] >= CHUNK, "the small mailing waited for the big fan-out to finish"

    chunks = chunks_logged(scheduler)
    big_chunks = [c["created"] for c in chunks if c["mailing_id"] == big["id"]]
    small_chunks = [c["created"] for c in chunks if c["mailing_id"] == small["id"]]
    # A mailing's first chunk is small (its first sends start at once), then full chunks.
    assert big_chunks[:3] == [FIRST_CHUNK_SIZE, CHUNK, CHUNK]
    assert sum(big_chunks) == BIG
    # The sparse filter takes one chunk, not one per range of CHUNK client ids.
    assert small_chunks == [100]

    # And it is delivered while the big one still runs.
    await pipeline.wait_completed(small["id"], timeout=60)
    assert pipeline.mailing_status(big["id"]) == "running"
    assert pipeline.message_counts(small["id"]) == {"sent": 100}
    assert (await pipeline.api.delete(f"/mailings/{big['id']}")).status_code == 204


async def test_two_schedulers_fan_out_dense_and_sparse_mailings_exactly(
    pipeline: Pipeline,
) -> None:
    """Keyset chunks under two schedulers: every matching client gets exactly one message, a
    deleted client none, and no chunk is larger than asked."""
    with database.connect(pipeline.db_name) as conn:
        conn.execute(
            """
            INSERT INTO client (phone, operator_code, tag, timezone)
            SELECT '79' || lpad(g::text, 9, '0'), CASE WHEN g % 2 = 0 THEN '901' ELSE '902' END,
                   CASE WHEN g % 7 = 0 THEN 'seventh' ELSE 'rest' END, 'Europe/Moscow'
            FROM generate_series(1, 20000) AS g
            """
        )
        conn.execute("UPDATE client SET deleted_at = now() WHERE id % 1000 = 0")
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE tag = 'seventh') FROM client"
            " WHERE deleted_at IS NULL"
        ).fetchone()
    assert row is not None
    counts = {"all": int(row[0]), "seventh": int(row[1])}
    schedulers = [pipeline.start_scheduler(fanout_chunk_size=500) for _ in range(2)]
    for proc in schedulers:
        await proc.wait_ready()

    dense = await pipeline.create_mailing()
    sparse = await pipeline.create_mailing(tags=["seventh"])

    async def both_done() -> bool:
        return all(
            fanout_row(pipeline, m["id"])["fanout_done_at"] is not None for m in (dense, sparse)
        )

    await wait_until(both_done, timeout=120, message="both fan-outs done")
    with database.connect(pipeline.db_name) as conn:
        for mailing, key in ((dense, "all"), (sparse, "seventh")):
            row = conn.execute(
                """
                SELECT count(*), count(DISTINCT m.client_id),
                       count(*) FILTER (WHERE c.deleted_at IS NOT NULL),
                       count(*) FILTER (WHERE mg.filter_tags <> '{}' AND c.tag <> 'seventh')
                FROM message m JOIN client c ON c.id = m.client_id
                JOIN mailing mg ON mg.id = m.mailing_id
                WHERE m.mailing_id = %s
                """,
                [mailing["id"]],
            ).fetchone()
            assert row == (counts[key], counts[key], 0, 0), key
    chunks = chunks_logged(*schedulers)
    for mailing, key in ((dense, "all"), (sparse, "seventh")):
        created = [c["created"] for c in chunks if c["mailing_id"] == mailing["id"]]
        assert sum(created) == counts[key]
        assert max(created) <= 500
    await pipeline.assert_stats_agree(dense["id"])
    await pipeline.assert_stats_agree(sparse["id"])
