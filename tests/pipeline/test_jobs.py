"""Send jobs as the sender meets them on the broker: multi-message jobs, garbage, and dead
letters (expired in the queue, or poison).

No scheduler runs here: the test leases message rows itself and publishes the jobs, so each
case is exactly one job.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from shared.messaging import SEND_ROUTING_KEY, Names, encode_jobs
from tests.pipeline.conftest import Pipeline
from tests.support import database
from tests.support.broker import AMQP_URL, queue_depth
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline


async def _running_mailing(pipeline: Pipeline, clients: int = 0, *, ends_in: float = 3600) -> int:
    """A running mailing to every client (`clients` more seeded first), its messages leased
    (queued, a token each)."""
    if clients:
        pipeline.seed_clients(clients)
    mailing = await pipeline.create_mailing(starts_in=3000, ends_in=ends_in)
    with database.connect(pipeline.db_name) as conn:
        conn.execute(
            "UPDATE mailing SET status = 'running', start_at = now() - interval '1 s', "
            "started_at = now(), fanout_done_at = now() WHERE id = %s",
            [mailing["id"]],
        )
        conn.execute(
            """
            INSERT INTO message (mailing_id, client_id, status, token, lease_until, not_before)
            SELECT %s, id, 'queued', nextval('message_token_seq'), now() + interval '1 hour',
                   now()
            FROM client ORDER BY id
            """,
            [mailing["id"]],
        )
    return int(mailing["id"])


def _leases(pipeline: Pipeline, mailing_id: int) -> list[tuple[int, int]]:
    with database.connect(pipeline.db_name) as conn:
        rows = conn.execute(
            "SELECT id, token FROM message WHERE mailing_id = %s ORDER BY id", [mailing_id]
        ).fetchall()
    return [(int(i), int(t)) for i, t in rows]


def _statuses(pipeline: Pipeline, mailing_id: int) -> dict[int, tuple[str, str | None]]:
    with database.connect(pipeline.db_name) as conn:
        rows = conn.execute(
            "SELECT id, status, last_error FROM message WHERE mailing_id = %s", [mailing_id]
        ).fetchall()
    return {int(i): (s, e) for i, s, e in rows}


async def _publish(
    pipeline: Pipeline, exchange: str, body: bytes, headers: dict[str, Any] | None = None
) -> None:
    names = Names(pipeline.namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(getattr(names, exchange), ensure=True)
        await target.publish(
            aio_pika.Message(body, headers=headers or {}, content_type="application/json"),
            SEND_ROUTING_KEY if exchange == "send" else "",
        )


async def _parked(pipeline: Pipeline) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Names(pipeline.namespace).parked, ensure=True)
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        return found


async def test_one_job_carries_many_messages_and_stale_ones_are_dropped(
    pipeline: Pipeline,
) -> None:
    mailing_id = await _running_mailing(pipeline, 30)
    leases = _leases(pipeline, mailing_id)
    # Five of them carry an old token: a lease since re-issued elsewhere, never to be sent.
    stale = leases[:5]
    items = [(i, t + 1_000_000) for i, t in stale] + leases[5:]
    await pipeline.start(schedulers=0, senders=1)
    await _publish(pipeline, "send", encode_jobs(mailing_id, items))

    async def sent() -> dict[int, tuple[str, str | None]] | None:
        statuses = _statuses(pipeline, mailing_id)
        done = sum(s == "sent" for s, _ in statuses.values())
        return statuses if done == 25 else None

    statuses = await wait_until(sent, timeout=30, message="25 sent")
    assert {statuses[i][0] for i, _ in stale} == {"queued"}
    assert set(pipeline.deliveries()) == {i for i, _ in leases[5:]}


async def test_garbage_is_parked_and_changes_nothing(pipeline: Pipeline) -> None:
    mailing_id = await _running_mailing(pipeline, 3)
    before = _statuses(pipeline, mailing_id)
    await pipeline.start(schedulers=0, senders=1)
    await _publish(pipeline, "send", b'{"items": "nope"}')

    parked: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def was_parked() -> bool:
        parked.extend(await _parked(pipeline))
        return bool(parked)

    await wait_until(was_parked, timeout=30, message="garbage parked")
    assert parked[0].body == b'{"items": "nope"}'
    assert "not a send job" in str((parked[0].headers or {}).get("reason"))
    assert _statuses(pipeline, mailing_id) == before
    assert pipeline.stub_requests() == 0


async def _expire_in_queue(
    pipeline: Pipeline, mailing_id: int, becomes: str
) -> dict[int, tuple[str, str | None]]:
    """Dead-letter a job of every message of the mailing as expired in the send queue; wait
    until all its messages have become `becomes`."""
    await pipeline.start(schedulers=0, senders=1)
    body = encode_jobs(mailing_id, _leases(pipeline, mailing_id))
    await _publish(pipeline, "dead", body, {"x-first-death-reason": "expired"})

    async def handled() -> dict[int, tuple[str, str | None]] | None:
        statuses = _statuses(pipeline, mailing_id)
        return statuses if all(s == becomes for s, _ in statuses.values()) else None

    statuses = await wait_until(handled, timeout=30, message=f"all {becomes}")
    assert pipeline.stub_requests() == 0
    return statuses


async def test_an_expired_job_before_the_end_goes_back_to_pending(pipeline: Pipeline) -> None:
    mailing_id = await _running_mailing(pipeline, 10)
    await _expire_in_queue(pipeline, mailing_id, "pending")


async def test_an_expired_job_at_the_end_expires_its_messages(pipeline: Pipeline) -> None:
    mailing_id = await _running_mailing(pipeline, 10)
    with database.connect(pipeline.db_name) as conn:  # within END_SAFETY_MARGIN_S of its end
        conn.execute(
            "UPDATE mailing SET end_at = now() + interval '0.1 s' WHERE id = %s", [mailing_id]
        )
    statuses = await _expire_in_queue(pipeline, mailing_id, "expired")
    assert {e for _, e in statuses.values()} == {"end time reached"}


async def test_a_poison_job_fails_its_open_messages_and_is_parked(pipeline: Pipeline) -> None:
    mailing_id = await _running_mailing(pipeline, 10)
    leases = _leases(pipeline, mailing_id)
    with database.connect(pipeline.db_name) as conn:  # one was delivered meanwhile
        conn.execute(
            "UPDATE message SET status = 'sent', sent_at = now() WHERE id = %s", [leases[0][0]]
        )
    await pipeline.start(schedulers=0, senders=1)
    body = encode_jobs(mailing_id, leases)
    await _publish(pipeline, "dead", body, {"x-first-death-reason": "delivery_limit"})

    async def handled() -> dict[int, tuple[str, str | None]] | None:
        statuses = _statuses(pipeline, mailing_id)
        failed = sum(s == "failed" for s, _ in statuses.values())
        return statuses if failed == 9 else None

    statuses = await wait_until(handled, timeout=30, message="poison handled")
    assert statuses[leases[0][0]][0] == "sent"
    assert {e for s, e in statuses.values() if s == "failed"} == {"poison job: delivery_limit"}

    parked: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def was_parked() -> bool:
        parked.extend(await _parked(pipeline))
        return bool(parked)

    await wait_until(was_parked, timeout=30, message="poison parked")
    assert parked[0].body == body
    await pipeline.assert_stats_agree(mailing_id)


async def test_a_job_of_a_deleted_mailing_cancels_and_the_sender_goes_on(
    pipeline: Pipeline,
) -> None:
    deleted = await _running_mailing(pipeline, 5)
    with database.connect(pipeline.db_name) as conn:
        conn.execute("UPDATE mailing SET deleted_at = now() WHERE id = %s", [deleted])
    live = await _running_mailing(pipeline)  # a second mailing to the same clients
    await pipeline.start(schedulers=0, senders=1, prefetch=1, messages_per_job=5)
    await _publish(pipeline, "send", encode_jobs(deleted, _leases(pipeline, deleted)))

    async def cancelled() -> bool:
        return {s for s, _ in _statuses(pipeline, deleted).values()} == {"cancelled"}

    await wait_until(cancelled, timeout=30, message="cancelled")
    await _publish(pipeline, "send", encode_jobs(live, _leases(pipeline, live)))

    async def sent() -> bool:
        return {s for s, _ in _statuses(pipeline, live).values()} == {"sent"}

    await wait_until(sent, timeout=30, message="the live mailing sent")
    assert pipeline.stub_requests() == 5
    # Both jobs were acked: once the sender is gone, nothing comes back to the queue.
    await asyncio.to_thread(pipeline.processes.stop_all)
    assert await queue_depth(pipeline.namespace, "send") == 0
    (sender,) = pipeline.processes.started
    assert '"level": "error"' not in sender.log_text()
