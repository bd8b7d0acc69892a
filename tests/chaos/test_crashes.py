"""Crashed workers and replicas: kill -9 a sender, kill -9 the scheduler mid fan-out, and two
schedulers with three senders at once. Nothing is lost; duplicates only where no system can
avoid them (a crash between the provider's answer and our write)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chaos.rig import open_rig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline


async def test_sender_killed_mid_mailing_loses_nothing(servers: dict[str, Any]) -> None:
    clients = 5000
    async with open_rig("sender kill -9", **servers) as rig:
        rig.seed_clients(clients)
        # 100 ms a request over 50 connections: a kill always finds requests under way.
        rig.set_faults(latency_ms=100)
        sender = rig.start_sender(max_connections=50)
        await rig.start_scheduler().wait_ready()
        await sender.wait_ready()
        mailing = await rig.create_mailing()

        await rig.wait_delivered(1500)

        async def busy() -> bool:
            return rig.message_counts(mailing["id"]).get("sending", 0) >= 20

        await wait_until(busy, timeout=30, message="requests under way")
        sender.kill()
        # Claimed by the dead sender, outcome unknown: the only messages that may go out twice.
        sending_at_kill = rig.message_counts(mailing["id"]).get("sending", 0)
        delivered_at_kill = rig.delivered_count()
        restarted_at = time.time()
        replacement = rig.start_sender(max_connections=50)
        await replacement.wait_ready()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=120)
        assert counts == {"sent": clients}
        await rig.wait_completed(mailing["id"])
        assert delivered_at_kill < clients, "the kill came after the mailing was done"
        await rig.verify(mailing["id"], matching=clients, max_duplicates=sending_at_kill)
        rig.finish(
            sending_at_kill=sending_at_kill,
            delivered_at_kill=delivered_at_kill,
            recover_s=rig.first_delivery_after(restarted_at),
        )


@pytest.mark.chaos_slow
@pytest.mark.timeout(240)
async def test_scheduler_killed_mid_fanout_creates_each_message_once(
    servers: dict[str, Any],
) -> None:
    clients = 200_000
    chunk = 5000
    async with open_rig("scheduler kill -9 mid fan-out (200k)", **servers) as rig:
        rig.seed_clients(clients)
        scheduler = rig.start_scheduler(fanout_chunk_size=chunk)
        sender = rig.start_sender(max_connections=50)
        await scheduler.wait_ready()
        await sender.wait_ready()
        mailing = await rig.create_mailing()
        mid = mailing["id"]

        async def fanout_under_way() -> bool:
            return (rig.mailing_row(mid)["fanout_cursor"] or 0) >= 4 * chunk

        await wait_until(fanout_under_way, timeout=60, interval=0.01, message="fan-out under way")
        scheduler.kill()
        row = rig.mailing_row(mid)
        cursor, snapshot = row["fanout_cursor"], row["fanout_max_client_id"]
        assert cursor < snapshot, f"the kill landed after the fan-out ({cursor}/{snapshot})"
        with rig.db() as conn:
            created_at_kill, below_cursor = conn.execute(
                "SELECT (SELECT count(*) FROM message WHERE mailing_id = %s),"
                " (SELECT count(*) FROM client WHERE id <= %s)",
                [mid, cursor],
            ).fetchone()  # type: ignore[misc]
        # Each chunk's rows and the cursor commit together: the cursor is exactly the progress.
        assert created_at_kill == below_cursor, (created_at_kill, below_cursor)

        restarted_at = time.time()
        delivered_before = rig.delivered_count()
        replacement = rig.start_scheduler(fanout_chunk_size=chunk)
        await replacement.wait_ready()

        async def fanout_done() -> bool:
            return rig.mailing_row(mid)["fanout_done_at"] is not None

        await wait_until(fanout_done, timeout=90, interval=0.2, message="fan-out done")
        fanout_s = round(time.time() - restarted_at, 1)
        with rig.db() as conn:
            total, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT client_id) FROM message WHERE mailing_id = %s",
                [mid],
            ).fetchone()  # type: ignore[misc]
        assert total == distinct == clients, (total, distinct)
        # Sending goes on after the restart (the rest would take minutes through the stub).
        await rig.wait_delivered(delivered_before + 3000, timeout=60)
        recover_s = rig.first_delivery_after(restarted_at)

        assert (await rig.api.delete(f"/mailings/{mid}")).status_code == 204  # type: ignore[union-attr]
        counts = await rig.wait_terminal(mid, clients, timeout=90)
        assert set(counts) <= {"sent", "cancelled"}, counts
        await rig.verify(mid, matching=clients, max_duplicates=0, deleted=True)
        rig.finish(
            cursor_at_kill=cursor,
            created_at_kill=created_at_kill,
            fanout_after_restart_s=fanout_s,
            recover_s=recover_s,
        )


async def test_two_schedulers_and_three_senders_send_each_message_once(
    servers: dict[str, Any],
) -> None:
    clients = 8000
    async with open_rig("2 schedulers + 3 senders", **servers) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=5)
        await rig.start(schedulers=2, senders=3, max_connections=30)
        started = time.time()
        mailing = await rig.create_mailing()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=150)
        assert counts == {"sent": clients}
        await rig.wait_completed(mailing["id"])
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(send_s=round(time.time() - started, 1))
