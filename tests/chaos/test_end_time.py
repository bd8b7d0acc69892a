"""The end time when the sender's clock reading is late: a slow claim, a stalled event loop.

Found by the soak (`make soak`, docs/RELIABILITY.md): on a loaded 2-core machine, mailings cut
off by their end time had 58 to 157 deliveries up to 0.6 s after it; on the wire (kernel
timestamps of the requests on the loopback interface) they left the sender up to 0.4 s after
the end. Two ways the sender's idea of the time left ran ahead of the truth, each made
deterministic here:

- the claim: the time left is the database's, as of its now() (the claim transaction's start),
  but the sender counted it from when the answer came back, so a claim that took 0.5 s gave
  every message in it 0.5 s more than it had. A lock held on the mailing's counter rows
  makes the claims wait here, across the end time.
- the loop: the sender checks the end just before it hands a request to aiohttp, which writes
  it a loop turn later; a loop that falls behind (here: stalled once, on purpose, by
  tests/chaos/stalling_sender.py) writes it inside the margin or after the end. The client
  now checks the last start again as it writes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from shared.domain.end_time import END_REACHED
from tests.chaos.rig import open_rig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

STALLING_SENDER = "tests.chaos.stalling_sender"
MARGIN_S = 0.3  # END_SAFETY_MARGIN_S under the rig


def _stalls(log_text: str) -> list[dict[str, Any]]:
    stalls = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "stalled the event loop":
            stalls.append(record)
    return stalls


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"{url}/metrics")).text


async def _end_soon(rig: Any, mailing_id: int, seconds: float) -> float:
    """Once requests are flowing, move the mailing's end to `seconds` from now (whatever the
    start-up took on a loaded machine); returns the new end (Unix time). A message claimed
    before the move still believes the old end, but it starts within the lease's 3 s of its
    claim or is given back, so 4 s leave none of them."""
    await rig.wait_delivered(100, timeout=120)
    with rig.db() as conn:
        row = conn.execute(
            "UPDATE mailing SET end_at = now() + make_interval(secs => %s) WHERE id = %s "
            "RETURNING end_at",
            [seconds, mailing_id],
        ).fetchone()
    assert row is not None
    return float(row[0].timestamp())


def _sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_claims_held_up_across_the_end_send_nothing_after_it(
    servers: dict[str, Any],
) -> None:
    clients = 5000
    async with open_rig("end time: claims held up across the end", **servers) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=20)  # about 500 messages/s: the end comes mid-mailing
        for proc in [rig.start_scheduler(), rig.start_sender(max_connections=10)]:
            await proc.wait_ready(timeout=90)
        mailing = await rig.create_mailing()
        end_at = await _end_soon(rig, mailing["id"], 4.0)

        # From 1 s before the end to 0.4 s after it, every claim of the mailing's messages
        # waits for their row locks (the counters no longer share a row to lock: deltas).
        await asyncio.sleep(max(end_at - 1.0 - time.time(), 0))
        with rig.db() as lock, rig.db() as probe:
            lock.execute("BEGIN")
            lock.execute(
                "SELECT 1 FROM message WHERE mailing_id = %s AND status IN ('pending', 'queued')"
                " FOR UPDATE",
                [mailing["id"]],
            )

            def waiting() -> int:
                # Backends of this database waiting for a lock. (pg_locks with the database's
                # oid missed the first waiter: it waits on the locker's transaction id, a lock
                # of no database, so a lone waiting claim went unseen for the 20 s.)
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                return int(row[0]) if row else 0

            async def some_waiting() -> int:
                return waiting()

            # Within seconds (the senders claim continuously; a loaded machine is slow).
            held_up = await wait_until(some_waiting, timeout=20, message="a claim waiting")
            await asyncio.sleep(max(end_at + 0.4 - time.time(), 0))
            lock.execute("COMMIT")

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=90)
        assert set(counts) <= {"sent", "expired"}, counts
        assert counts.get("sent", 0) > 0 and counts.get("expired", 0) > 0, counts
        # Nothing accepted after the end, though claims made before it returned after it.
        figures = await rig.verify(mailing["id"], matching=clients, unsure_ok=True)
        last = max(d["last_at"] for d in rig.deliveries().values())
        assert last <= end_at
        rig.finish(
            statements_held_up=held_up,
            last_delivery_before_end_s=round(end_at - last, 2),
            delivered=figures["delivered"],
        )


async def test_a_loop_stalled_between_the_check_and_the_write_sends_nothing_late(
    servers: dict[str, Any],
) -> None:
    clients = 5000
    async with open_rig("end time: loop stalled after the check", **servers) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=20)  # about 500 messages/s: requests start all the time
        scheduler = rig.start_scheduler()
        sender = rig.processes.start(
            "sender", module=STALLING_SENDER, max_connections=10, stall_within_s=1.0
        )
        await scheduler.wait_ready(timeout=90)
        await sender.wait_ready(timeout=90)
        mailing = await rig.create_mailing()
        end_at = await _end_soon(rig, mailing["id"], 4.0)

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=90)
        assert set(counts) <= {"sent", "expired"}, counts
        assert counts.get("sent", 0) > 0 and counts.get("expired", 0) > 0, counts
        stalls = _stalls(sender.log_text())
        assert len(stalls) == 1, "the loop stalled once, after a request near the end passed"
        stalled_id = int(stalls[0]["message_id"])
        # The stall ended inside the margin, before the end: the request's timeout had not
        # fired, and without the check at the write it went out then.
        assert stalled_id not in rig.deliveries(), "the request held up by the stall went out"
        with rig.db() as conn:
            row = conn.execute(
                "SELECT status, last_error FROM message WHERE id = %s", [stalled_id]
            ).fetchone()
        assert row == ("expired", END_REACHED), row
        figures = await rig.verify(mailing["id"], matching=clients, unsure_ok=True)
        last = max(d["last_at"] for d in rig.deliveries().values())
        assert last <= end_at
        text = await _metrics(sender.metrics_url)
        not_written = _sample(text, 'mailing_jobs_dropped_total{reason="not_written"}')
        assert not_written >= 1, "the stalled request was held back at its write"
        # The lag monitor saw the stall (at least 0.2 s: the margin less 0.1 s before the end).
        lag_count = _sample(text, "mailing_event_loop_lag_seconds_count")
        assert lag_count > _sample(text, 'mailing_event_loop_lag_seconds_bucket{le="0.1"}')
        rig.finish(
            stall_s=round(stalls[0]["stall_s"], 2),
            stalled_with_s_left=round(stalls[0]["time_left_s"], 2),
            not_written=not_written,
            last_delivery_before_end_s=round(end_at - last, 2),
            delivered=figures["delivered"],
        )


async def test_a_loop_stalled_past_the_leases_last_start_gives_the_message_back_unsent(
    servers: dict[str, Any],
) -> None:
    """The lease's twin of the test above: the request is checked against the lease again as
    it is written, so one held up past the lease's last start goes back to pending unsent
    (another sender may hold it by the time it would end), and is sent once, later."""
    clients = 300
    async with open_rig("lease: loop stalled after the check", **servers) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=20)
        scheduler = rig.start_scheduler()
        sender = rig.processes.start(
            "sender", module=STALLING_SENDER, max_connections=10, stall_past_lease="1"
        )
        await scheduler.wait_ready(timeout=90)
        await sender.wait_ready(timeout=90)
        mailing = await rig.create_mailing()

        assert await rig.wait_terminal(mailing["id"], clients, timeout=90) == {"sent": clients}
        stalls = _stalls(sender.log_text())
        assert len(stalls) == 1, "the loop stalled once, after the first request's check"
        stalled_id = int(stalls[0]["message_id"])
        given_back = [
            r
            for r in (
                json.loads(line) for line in sender.log_text().splitlines() if line[:1] == "{"
            )
            if r.get("event", "").startswith("message given back unsent")
        ]
        # It, and any other request of its claim the stall held up past the same last start.
        assert stalled_id in {int(r["message_id"]) for r in given_back}
        text = await _metrics(sender.metrics_url)
        assert _sample(text, 'mailing_jobs_dropped_total{reason="lease_lapsing"}') >= 1
        # Each sent once, by a later claim: the held-up requests were never written.
        assert {rig.deliveries()[int(r["message_id"])]["count"] for r in given_back} == {1}
        figures = await rig.verify(mailing["id"], matching=clients)
        rig.finish(stall_s=round(stalls[0]["stall_s"], 2), delivered=figures["delivered"])
