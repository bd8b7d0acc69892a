"""The sender's request limit: slow start, growth per answer, reset, fair wake-ups."""

from __future__ import annotations

import asyncio

from services.sender.limit import ConcurrencyLimit


async def _holders(limit: ConcurrencyLimit, count: int) -> tuple[list[asyncio.Task[None]], int]:
    acquired = 0

    async def hold() -> None:
        nonlocal acquired
        await limit.acquire()
        acquired += 1
        await asyncio.Event().wait()  # held until cancelled

    tasks = [asyncio.create_task(hold()) for _ in range(count)]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks, acquired


async def test_starts_small_and_each_answer_lets_one_more_in() -> None:
    limit = ConcurrencyLimit(initial=4, maximum=10)
    tasks, acquired = await _holders(limit, 20)
    assert acquired == 4 and limit.in_use == 4
    limit.grow()
    limit.grow()
    for _ in range(5):
        await asyncio.sleep(0)
    assert limit.in_use == 6
    for _ in range(10):
        limit.grow()
    for _ in range(5):
        await asyncio.sleep(0)
    assert limit.limit == 10 and limit.in_use == 10
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_release_wakes_the_next_waiter_in_order() -> None:
    limit = ConcurrencyLimit(initial=1, maximum=1)
    order: list[int] = []

    async def worker(n: int) -> None:
        await limit.acquire()
        order.append(n)
        await asyncio.sleep(0)
        limit.release()

    await asyncio.gather(*(worker(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert limit.in_use == 0


async def test_reset_lowers_the_limit_for_new_requests_only() -> None:
    limit = ConcurrencyLimit(initial=2, maximum=8)
    for _ in range(6):
        limit.grow()
    tasks, acquired = await _holders(limit, 8)
    assert acquired == 8
    limit.reset()
    assert limit.limit == 2
    for task in tasks[:7]:
        task.cancel()
    await asyncio.gather(*tasks[:7], return_exceptions=True)
    # Cancelled holders never released (they were blocked on an Event): release for them.
    for _ in range(7):
        limit.release()
    waiting, got = await _holders(limit, 3)
    assert got == 1  # one in use (tasks[7]), limit 2
    tasks[7].cancel()
    for task in waiting:
        task.cancel()
    await asyncio.gather(tasks[7], *waiting, return_exceptions=True)


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    limit = ConcurrencyLimit(initial=1, maximum=1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limit.release()
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)
    assert limit.in_use == 1
