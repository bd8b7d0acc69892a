"""The scheduler's duties beside its top-up loop that keep the database in shape: the sweep
(expire, cancel, complete) and the fold of the status counters. Each runs in a task of its own
with its own session and back-off, and a batch size that shrinks when its statement times out,
so a slow or failing one never holds up sending (docs/RELIABILITY.md, "Hours of load")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from psycopg.errors import QueryCanceled
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import sweep
from shared import metrics
from shared.settings import SchedulerSettings

log = structlog.get_logger("scheduler")


@dataclass
class AdaptiveBatch:
    """Rows per statement: halved after a timeout (never the same size for ever), doubled back
    towards `maximum` while full batches finish within `target_s`."""

    maximum: int
    minimum: int = 100
    target_s: float = 1.0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.minimum = min(self.minimum, self.maximum)
        self.size = self.maximum

    def timed_out(self) -> None:
        self.size = max(self.minimum, self.size // 2)

    def finished(self, rows: int, seconds: float) -> None:
        if seconds > self.target_s:
            # Too slow even without a timeout: aim for target_s next time.
            self.size = max(self.minimum, min(self.size, int(rows * self.target_s / seconds)))
        elif rows >= self.size and seconds < self.target_s / 2:
            self.size = min(self.maximum, self.size * 2)


@dataclass
class Backoff:
    """Seconds to wait before a failed duty runs again: `base`, doubling per failure in a row
    up to `ceiling`; back to `base` after a success."""

    base: float
    ceiling: float = 30.0
    failures: int = 0

    def failed(self) -> float:
        self.failures += 1
        return min(self.ceiling, self.base * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures = 0


# One sweep statement, given SWEEP_STATEMENT_TIMEOUT_S at most.
SweepStep = Callable[[AsyncSession, int], Awaitable[int]]
FOLD = text("SELECT message_count_fold()")
VACUUM_COUNTERS = text(
    "VACUUM (SKIP_LOCKED) message_count_delta, message_count_folded, message_minute"
)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


class Sweeper:
    """Expire what passed its end, cancel what was cancelled, complete what is done: again at
    once while a chunk came back full, else every poll interval."""

    def __init__(
        self,
        settings: SchedulerSettings,
        sessions: async_sessionmaker[AsyncSession],
        stopping: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.stopping = stopping
        self.wake = asyncio.Event()
        self.batches = (
            AdaptiveBatch(settings.sweep_batch_size),
            AdaptiveBatch(settings.sweep_batch_size),
        )
        self._timeout = text(
            f"SET LOCAL statement_timeout = {int(settings.sweep_statement_timeout_s * 1000)}"
        )

    async def run(self) -> None:
        backoff = Backoff(base=self.settings.poll_interval_s)
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                busy = await self.sweep()
                backoff.succeeded()
            except Exception:
                metrics.SCHEDULER_ERRORS.inc()
                log.exception("sweep failed; retrying after a back-off")
                await _wait(self.stopping, backoff.failed())
                continue
            if not busy:
                await _wait(self.wake, self.settings.poll_interval_s)

    async def _step(self, name: str, batch: AdaptiveBatch, step: SweepStep) -> int:
        """One chunk of `step` at the batch's size; a statement timeout halves the batch
        (counted, logged, and tried again at the smaller size on the next pass)."""
        started = time.monotonic()
        try:
            async with self.sessions() as session:
                await session.execute(self._timeout)
                rows = await step(session, batch.size)
        except DBAPIError as error:
            if not isinstance(error.orig, QueryCanceled):
                raise
            batch.timed_out()
            metrics.SWEEP_TIMEOUTS.labels(name).inc()
            log.warning("sweep chunk timed out; smaller next time", step=name, size=batch.size)
            return batch.size  # as busy as a full chunk: go again at once
        seconds = time.monotonic() - started
        metrics.SWEEP_SECONDS.labels(name).observe(seconds)
        batch.finished(rows, seconds)
        return rows

    async def sweep(self) -> bool:
        """One pass; True when a chunk came back full (more to sweep right away). The steps
        are looked up at each pass (tests replace them)."""
        cancel, expire = self.batches
        cancel_limit, expire_limit = cancel.size, expire.size
        cancelled = await self._step("cancel", cancel, sweep.cancel_chunk)
        expired = await self._step("expire", expire, sweep.expire_chunk)
        expired += await self._step("expire_tests", expire, sweep.expire_test_sends)
        async with self.sessions() as session:
            completed = await sweep.complete_mailings(session)
            metrics.BACKLOG.set(await sweep.backlog(session))
        metrics.MESSAGES_SWEPT.labels("cancelled").inc(cancelled)
        metrics.MESSAGES_SWEPT.labels("expired").inc(expired)
        if expired:
            log.info("expired messages past their mailing's end time", count=expired)
        for mailing_id in completed:
            metrics.MAILINGS_COMPLETED.inc()
            log.info("mailing completed", mailing_id=mailing_id)
        return cancelled >= cancel_limit or expired >= expire_limit


class Folder:
    """Fold the status counters' deltas every FOLD_INTERVAL_S, and vacuum the small tables that
    churn with them every VACUUM_INTERVAL_S, so neither grows when autovacuum lags."""

    def __init__(
        self,
        settings: SchedulerSettings,
        sessions: async_sessionmaker[AsyncSession],
        stopping: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.stopping = stopping

    async def run(self) -> None:
        backoff = Backoff(base=self.settings.fold_interval_s)
        vacuumed_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                async with self.sessions() as session:
                    folded = int(await session.scalar(FOLD) or 0)
                    await session.commit()
                metrics.COUNTER_DELTAS_FOLDED.inc(folded)
                if time.monotonic() - vacuumed_at >= self.settings.vacuum_interval_s:
                    vacuumed_at = time.monotonic()
                    await self._vacuum()
                backoff.succeeded()
                wait = self.settings.fold_interval_s
            except Exception:
                metrics.SCHEDULER_ERRORS.inc()
                log.exception("folding the status counters failed; retrying after a back-off")
                wait = backoff.failed()
            await _wait(self.stopping, wait)

    async def _vacuum(self) -> None:
        try:
            async with self.sessions() as session:
                conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                await conn.execute(VACUUM_COUNTERS)
        except Exception:
            # Not the owner, say: autovacuum (or the operator) has to do it.
            log.warning("vacuuming the counter tables failed", exc_info=True)
