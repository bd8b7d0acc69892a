"""The api's grouped receipt writes (services/api/receipts.py): calls that arrive while a
write runs go together in the next one; each call returns once its own receipt is written;
a failed write fails its group only; a caller that goes away leaves its group written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from services.api import receipts as module
from services.api.receipts import ReceiptWriter
from shared.receipts import Receipt
from tests.support.waiting import wait_until


@asynccontextmanager
async def no_session() -> AsyncIterator[None]:
    yield None


def receipt(n: int) -> Receipt:
    return Receipt("gateway", str(n), True)


class FakeStore:
    """apply_receipts that records each group and holds the first until released."""

    def __init__(self, fail_group: int | None = None) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_group = fail_group
        self.hold_next: asyncio.Event | None = None  # holds the groups after the first

    async def __call__(self, session: Any, given: Sequence[Receipt]) -> None:
        self.groups.append([r.provider_message_id for r in given])
        if len(self.groups) == 1:
            await self.release.wait()
        elif self.hold_next is not None:
            await self.hold_next.wait()
        if self.fail_group == len(self.groups):
            raise RuntimeError("database went away")


async def started_first(store: FakeStore, writer: ReceiptWriter) -> asyncio.Task[None]:
    first = asyncio.create_task(writer.apply(receipt(1)))

    async def holding() -> bool:
        return len(store.groups) == 1

    await wait_until(holding, message="the first write under way")
    return first


async def queued(writer: ReceiptWriter, count: int) -> None:
    async def all_in() -> bool:
        return len(writer.pending) == count

    await wait_until(all_in, message=f"{count} receipts waiting")


async def test_calls_during_a_write_go_together_in_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore()
    monkeypatch.setattr(module, "apply_receipts", store)
    writer = ReceiptWriter(no_session)  # type: ignore[arg-type]
    first = await started_first(store, writer)
    others = [asyncio.create_task(writer.apply(receipt(n))) for n in range(2, 12)]
    await queued(writer, 10)
    assert not any(t.done() for t in others)  # nobody answered before its write
    store.release.set()
    await asyncio.gather(first, *others)
    assert store.groups == [["1"], [str(n) for n in range(2, 12)]]


async def test_a_failed_write_fails_its_group_only(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore(fail_group=2)
    monkeypatch.setattr(module, "apply_receipts", store)
    writer = ReceiptWriter(no_session)  # type: ignore[arg-type]
    first = await started_first(store, writer)
    second = [asyncio.create_task(writer.apply(receipt(n))) for n in (2, 3)]
    await queued(writer, 2)
    store.release.set()
    await first
    for task in second:
        with pytest.raises(RuntimeError):
            await task
    await writer.apply(receipt(4))  # the next group is written again
    assert store.groups[-1] == ["4"]


async def test_a_caller_that_goes_away_leaves_its_group_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore()
    monkeypatch.setattr(module, "apply_receipts", store)
    writer = ReceiptWriter(no_session)  # type: ignore[arg-type]
    first = await started_first(store, writer)
    second_release = asyncio.Event()
    leader = asyncio.create_task(writer.apply(receipt(2)))  # first in line for the lock
    follower = asyncio.create_task(writer.apply(receipt(3)))
    await queued(writer, 2)
    store.hold_next = second_release
    store.release.set()
    await first

    async def holding() -> bool:
        return store.groups == [["1"], ["2", "3"]]

    await wait_until(holding, message="the second group under way")
    leader.cancel()  # e.g. the gateway hung up
    second_release.set()
    # Answered although the caller that wrote its group is gone (a deadline, not a hang).
    await asyncio.wait_for(follower, timeout=10)
    with pytest.raises(asyncio.CancelledError):
        await leader
