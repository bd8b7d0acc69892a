from __future__ import annotations

import asyncio

from services.sender.budget import ClaimBudget
from services.sender.service import claim_budget
from shared.settings import SenderSettings


async def test_take_waits_until_enough_is_given_back() -> None:
    budget = ClaimBudget(10)
    await budget.take(8)
    waiter = asyncio.create_task(budget.take(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await budget.give(2)
    await asyncio.sleep(0)
    assert not waiter.done()
    await budget.give(1)
    await asyncio.wait_for(waiter, 1)
    assert budget.free == 0


def test_budget_follows_connections_and_rate_limit() -> None:
    assert claim_budget(SenderSettings(max_connections=50)) == 100
    limited = SenderSettings(max_connections=50, rate_limit_per_s=2, sending_lease_s=60)
    assert claim_budget(limited) == 30
    assert claim_budget(SenderSettings(max_connections=50, rate_limit_per_s=0.01)) == 1
