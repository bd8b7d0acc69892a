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

    async def fake_chunk(
        session: object, chunk_size: int, **_: object
    ) -> fanout.ChunkResult | None:
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


async def test_room_found_while_idle_behind_a_full_cap_is_filled_until_none_is_due() -> None:
    """Idle behind a full lease cap, the scheduler looks for room every CAP_RECHECK_S; a look
    that finds room and fills it is followed by another soon (more may be due), not by the
    rest of the poll interval (which held a short mailing's last messages back 2 s)."""
    sched = Scheduler(
        SchedulerSettings(poll_interval_s=30),
        lambda: DatabaseDown(),
        connection=None,  # type: ignore[arg-type]
    )
    # full, full, room filled, room filled, fewer due than room (nothing more), then idle
    looks: list[tuple[bool, bool]] = [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
        (False, False),
    ]

    async def top_up() -> bool:
        sched.cap_full, filled = looks.pop(0)
        if not looks:
            sched.wake.set()  # an event ends the wait: the test need not sit out the poll
        return filled

    sched.top_up = top_up  # type: ignore[method-assign]
    sched.cap_full = True
    await asyncio.wait_for(sched._idle(), 5)  # not the 30 s poll
    assert looks == []
