"""The scheduler's fan-out task: it survives a database outage without a hot loop, and it
wakes the main loop after each chunk so the new messages are queued at once."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import pytest

from services.scheduler import fanout
from services.scheduler.service import Scheduler
from shared.settings import SchedulerSettings


class DatabaseDown:
    async def __aenter__(self) -> None:
        raise OSError("connection refused")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def scheduler(sessions: Any) -> Scheduler:
    settings = SchedulerSettings(poll_interval_s=0.05)
    return Scheduler(settings, sessions, connection=None)  # type: ignore[arg-type]


async def test_a_database_outage_is_retried_at_the_poll_interval() -> None:
    calls = 0

    def sessions() -> DatabaseDown:
        nonlocal calls
        calls += 1
        return DatabaseDown()

    sched = scheduler(sessions)
    task = asyncio.create_task(sched._fanout_loop())
    for _ in range(20):
        # Wake-ups during the outage do not make it retry any faster.
        sched.fanout_wake.set()
        await asyncio.sleep(0.025)
    sched.stop()
    await asyncio.wait_for(task, 1)
    assert 3 <= calls <= 15, calls


async def test_each_chunk_wakes_the_main_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    results = [fanout.ChunkResult(1, 1000, False), fanout.ChunkResult(1, 500, True), None]

    async def fake_chunk(session: object, chunk_size: int) -> fanout.ChunkResult | None:
        return results.pop(0) if results else None

    class Session:
        async def __aenter__(self) -> object:
            return object()

        async def __aexit__(self, *args: object) -> None:
            return None

    monkeypatch.setattr(fanout, "fanout_chunk", fake_chunk)
    sched = scheduler(Session)
    assert (await sched.fanout_once()) == fanout.ChunkResult(1, 1000, False)
    assert sched.wake.is_set()
    sched.wake.clear()
    assert (await sched.fanout_once()) == fanout.ChunkResult(1, 500, True)
    assert sched.wake.is_set()
    sched.wake.clear()
    assert await sched.fanout_once() is None
    assert not sched.wake.is_set()
