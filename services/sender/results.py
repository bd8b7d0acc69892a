"""Writing send results soon after each request finishes, many per statement.

A result waits at most `linger` for company, then goes to the database in one statement with
the others; the caller acks its job only once that write is done. Writing soon (rather than
once a whole batch is done) keeps the window small in which a crash forgets a delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from services.sender.store import Result
from shared.domain.statuses import MessageStatus

WriteBatch = Callable[[Sequence[Result]], Awaitable[dict[int, MessageStatus]]]


class ResultWriter:
    def __init__(self, write: WriteBatch, *, linger_s: float, max_batch: int) -> None:
        self._write = write
        self._linger = linger_s
        self._max = max_batch
        self._pending: list[tuple[Result, asyncio.Future[MessageStatus | None]]] = []
        self._wakeup = asyncio.Event()

    async def submit(self, result: Result) -> MessageStatus | None:
        """The status the message has after the write (None: it was no longer ours)."""
        future: asyncio.Future[MessageStatus | None] = asyncio.get_running_loop().create_future()
        self._pending.append((result, future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self._max:
                await asyncio.sleep(self._linger)
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            if not self._pending:
                self._wakeup.clear()
            written = await self._write([result for result, _ in batch])
            for result, future in batch:
                if not future.done():
                    future.set_result(written.get(result.message_id))
