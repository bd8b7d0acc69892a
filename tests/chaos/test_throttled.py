"""Senders slower than their leases: a rate-limited sender beside a fast one, a lease cap
drained slower than its lease, and a sender frozen (SIGSTOP) past its lease. Nothing crashes,
so nothing may go out twice, and no job that was never lost is re-published over and over."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.chaos.rig import Rig, metric_value, open_rig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

REAPED = 'mailing_messages_queued_total{reason="reaped"}'


async def _holds(rig: Rig, mailing_id: int, n: int) -> int:
    async def held() -> int:
        count = rig.message_counts(mailing_id).get("sending", 0)
        return count if count >= n else 0

    return await wait_until(held, timeout=30, message=f"{n} messages claimed")


async def _quiet(rig: Rig, seconds: float, timeout: float = 60) -> None:
    """Until the stub has received no request for `seconds`."""
    last = (rig.stub_requests(), time.monotonic())

    async def quiet() -> bool:
        nonlocal last
        now = rig.stub_requests()
        if now != last[0]:
            last = (now, time.monotonic())
        return time.monotonic() - last[1] >= seconds

    await wait_until(quiet, timeout=timeout, interval=0.1, message="the provider quiet")


@pytest.mark.chaos_slow
async def test_slow_sender_beside_a_fast_one_sends_each_message_once(
    servers: dict[str, Any],
) -> None:
    """Regression (fixed in 3606183, claim budget): a rate-limited sender used to claim more
    than it could start within its lease; the reaper then gave those messages to the fast
    sender and both sent them (752 and 919 duplicates out of 5,000 in two runs)."""
    clients = 5000
    async with open_rig("slow sender beside a fast one", **servers, lease_ttl_s=5) as rig:
        rig.seed_clients(clients)
        scheduler = rig.start_scheduler()
        slow = rig.start_sender(rate_limit_per_s=50)
        await scheduler.wait_ready()
        await slow.wait_ready()
        mailing = await rig.create_mailing()
        held = await _holds(rig, mailing["id"], 10)
        fast = rig.start_sender()
        await fast.wait_ready()
        started = time.time()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=150)
        assert counts == {"sent": clients}
        await _quiet(rig, 2.0)
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(
            held_by_slow_sender=held,
            reaped=await metric_value(scheduler, REAPED),
            send_s=round(time.time() - started, 1),
        )


@pytest.mark.chaos_slow
async def test_window_drained_slower_than_its_lease_keeps_its_pace(
    servers: dict[str, Any],
) -> None:
    """Regression (fixed in 3606183, adaptive send window): with a fixed window of 5,000 leased
    for 5 s and senders draining 200/s, the reaper re-published jobs still waiting in the
    queue, with new tokens, so stale jobs piled up ahead of live ones (13,676 re-publishes for
    5,000 messages at 116 sends/s of 200 in one run; 46,806 for 6,000 and 37 s without a single
    delivery in another)."""
    clients = 5000
    capacity = 200  # 10 connections at 50 ms
    async with open_rig(
        "window drained slower than its lease", **servers, lease_cap=5000, lease_ttl_s=5
    ) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=50)
        scheduler, _ = await rig.start(max_connections=10)
        started = time.time()
        mailing = await rig.create_mailing()

        async def done() -> bool:
            return rig.message_counts(mailing["id"]) == {"sent": clients}

        await wait_until(done, timeout=120, interval=0.5, message="all sent")
        elapsed = time.time() - started
        reaped = await metric_value(scheduler, REAPED) or 0
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        # No job was lost (no crash, no broker restart): re-publishing should be rare.
        assert reaped <= clients // 10, f"{reaped:.0f} jobs re-published for {clients}"
        rig.finish(
            reaped=reaped,
            sends_per_s=round(clients / elapsed),
            capacity_per_s=capacity,
        )


async def test_sender_frozen_past_its_lease_does_not_send_what_it_lost(
    servers: dict[str, Any],
) -> None:
    clients = 5000
    async with open_rig(
        "sender frozen past its lease (SIGSTOP)", **servers, provider_timeout_s=2, sending_lease_s=5
    ) as rig:
        rig.seed_clients(clients)
        scheduler = rig.start_scheduler()
        # Rate-limited: of the 25 messages it may claim (20/s for a quarter of the lease), only
        # the one under way is in flight, the rest wait for their turn.
        frozen = rig.start_sender(rate_limit_per_s=20, max_connections=50)
        await scheduler.wait_ready()
        await frozen.wait_ready()
        mailing = await rig.create_mailing()
        # Past the limiter's first burst: from now on one request at a time, the rest waiting.
        await rig.wait_delivered(60)
        await _holds(rig, mailing["id"], 15)

        frozen.process.send_signal(signal.SIGSTOP)
        thawed_at = time.time()
        try:
            held_at_freeze = rig.message_counts(mailing["id"]).get("sending", 0)
            fast = rig.start_sender()
            await fast.wait_ready()
            counts = await rig.wait_terminal(mailing["id"], clients, timeout=120)
            assert counts == {"sent": clients}
        finally:
            thawed_at = time.time()
            frozen.process.send_signal(signal.SIGCONT)
        await _quiet(rig, 3.0)
        delivered = rig.deliveries().values()
        duplicates = sum(d["count"] - 1 for d in delivered)
        # Every message was sent (by the other sender) before the thaw: a delivery after it can
        # only be the frozen sender starting a request for a message it no longer held.
        resent = sum(1 for d in delivered if d["count"] > 1 and d["last_at"] > thawed_at)
        rig.finish(
            messages=clients,
            duplicates=duplicates,
            held_at_freeze=held_at_freeze,
            resent_after_thaw=resent,
        )
        # Requests under way at the freeze may have reached the provider: as after a kill -9,
        # those may go out twice (they reached the stub before the thaw).
        assert duplicates <= held_at_freeze, f"{duplicates} duplicates > {held_at_freeze}"
        assert resent == 0, f"{resent} messages sent again after the thaw"
