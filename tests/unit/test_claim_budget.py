from __future__ import annotations

import asyncio

from services.sender.budget import ClaimBudget
from services.sender.service import claim_budget, prefetch_jobs
from shared.settings import SenderSettings


async def test_take_waits_until_enough_is_given_back() -> None:
    budget = ClaimBudget(10)
    await budget.take(8)
    waiter = asyncio.create_task(budget.take(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    budget.give(2)
    await asyncio.sleep(0)
    assert not waiter.done()
    budget.give(1)
    await asyncio.wait_for(waiter, 1)
    assert budget.free == 0


async def test_a_share_is_given_back_message_by_message_and_once() -> None:
    budget = ClaimBudget(10)
    share = await budget.take(6)
    share.give()
    share.give(2)
    assert budget.free == 7 and share.left == 3
    share.give_all()
    share.give_all()
    share.give(5)
    assert budget.free == 10


async def test_waiters_are_served_in_turn() -> None:
    budget = ClaimBudget(10)
    first = await budget.take(10)
    big = asyncio.create_task(budget.take(8))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.take(1))
    await asyncio.sleep(0)
    first.give(2)
    await asyncio.sleep(0)
    # Two are free, enough for the small one, but the big one asked first.
    assert not big.done() and not small.done()
    first.give_all()
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert budget.free == 1


async def test_a_cancelled_waiter_takes_nothing() -> None:
    budget = ClaimBudget(4)
    held = await budget.take(4)
    waiter = asyncio.create_task(budget.take(3))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    held.give_all()
    assert budget.free == 4


def test_budget_follows_connections_and_rate_limit() -> None:
    assert claim_budget(SenderSettings(max_connections=50)) == 100
    limited = SenderSettings(max_connections=50, rate_limit_per_s=2, sending_lease_s=60)
    assert claim_budget(limited) == 30
    assert claim_budget(SenderSettings(max_connections=50, rate_limit_per_s=0.01)) == 1


def test_prefetch_counts_jobs_and_follows_the_budget() -> None:
    assert prefetch_jobs(SenderSettings(prefetch=512, messages_per_job=50)) == 11
    # Rate-limited to 20/s with a 5 s lease: 25 may be claimed, so about 50 are prefetched.
    limited = SenderSettings(rate_limit_per_s=20, sending_lease_s=5, provider_timeout_s=2)
    assert prefetch_jobs(limited) == 2
    assert prefetch_jobs(SenderSettings(prefetch=1, messages_per_job=50)) == 2
