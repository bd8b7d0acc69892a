"""The scheduler's loop: start due mailings, fan out, keep the send queue topped up, sweep."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import activation, fanout, leasing, publishing
from services.scheduler.activation import Started
from services.scheduler.duty import Folder, Sweeper
from services.scheduler.lease_cap import LeaseCap, cap_horizon_s
from services.scheduler.retention import Retention
from shared import metrics, tracing
from shared.messaging import (
    RECONNECT_INTERVAL_S,
    Topology,
    declare_topology,
)
from shared.settings import SchedulerSettings

log = structlog.get_logger("scheduler")
CAP_RECHECK_S = 0.05
MIN_LEASE_CAP = 200
# The lease cap before the senders' pace is measured: a short mailing (a couple of thousand
# messages) goes out at once instead of in rounds of the minimum while the cap learns. Never
# more than the slowest pace we assume (INITIAL_DRAIN_PER_S) drains within the lease TTL, so a
# slow sender does not let first leases lapse in the queue (with a 5 s TTL: the minimum).
INITIAL_LEASE_CAP = 2_000
INITIAL_DRAIN_PER_S = 20


def initial_lease_cap(lease_ttl_s: float) -> int:
    return min(INITIAL_LEASE_CAP, int(lease_ttl_s * INITIAL_DRAIN_PER_S))


class Scheduler:
    # On stop, how long a fan-out chunk under way may take to commit before it is cancelled.
    FANOUT_STOP_TIMEOUT_S = 10.0

    def __init__(
        self,
        settings: SchedulerSettings,
        session_factory: async_sessionmaker[AsyncSession],
        connection: AbstractRobustConnection,
        *,
        retention: Retention | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.connection = connection
        self.topology: Topology | None = None
        self.wake = asyncio.Event()
        # Wakes the fan-out task: a mailing started.
        self.fanout_wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.sweeper = Sweeper(settings, session_factory, self.stopping)
        self.folder = Folder(settings, session_factory, self.stopping)
        self.last_round_ok = 0.0
        # The API request behind each mailing's latest event, passed on in job headers so one
        # request id leads from the API through the scheduler to the sender's log lines.
        self.request_ids: dict[int, str] = {}
        self.queue_checked_at = 0.0
        # Due messages wait behind a full lease cap: look again soon, not at the next poll.
        self.cap_full = False
        self.lease_cap = LeaseCap(
            minimum=MIN_LEASE_CAP,
            initial=initial_lease_cap(settings.lease_ttl_s),
            maximum=settings.lease_cap,
            # A few seconds of work, so a new mailing's jobs wait behind little in the FIFO queue.
            horizon_s=cap_horizon_s(settings.lease_ttl_s, settings.lease_cap_horizon_s),
        )
        # Partition upkeep and MESSAGE_RETENTION_DAYS, at start and every RETENTION_INTERVAL_S.
        self.retention = retention

    async def setup(self) -> None:
        channel = await self.connection.channel(publisher_confirms=True)
        # Retry delays belong to the sender's settings; the scheduler declares no retry queues.
        self.topology = await declare_topology(channel, self.settings.amqp_namespace, [])
        events_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await events_queue.bind(self.topology.events, "mailing.*")
        await events_queue.consume(self._on_event, no_ack=True)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        request_id = headers.get("request_id")
        mailing_id = headers.get("mailing_id")
        if isinstance(mailing_id, int) and isinstance(request_id, str):
            if len(self.request_ids) > 10_000:
                self.request_ids.clear()
            self.request_ids[mailing_id] = request_id
        log.info(
            "woken by event",
            routing_key=message.routing_key,
            mailing_id=mailing_id,
            request_id=request_id,
        )
        self.wake.set()

    def _duties(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The duties beside the top-up loop, each in its own task, session and back-off: a
        slow or failing one never holds up the leasing (and so the sending) of the others."""
        duties: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "fanout": self._fanout_loop,
            "sweep": self.sweeper.run,
            "fold": self.folder.run,
        }
        if self.retention is not None:
            duties["retention"] = self._retention_loop
        return duties

    async def run(self) -> None:
        duties = self._duties()
        tasks = {name: asyncio.create_task(loop(), name=name) for name, loop in duties.items()}
        try:
            while not self.stopping.is_set():
                # Cleared before the round, so an event arriving during it is not lost.
                self.wake.clear()
                try:
                    busy = await self.round()
                    self.last_round_ok = time.monotonic()
                except Exception:
                    metrics.SCHEDULER_ERRORS.inc()
                    log.exception("scheduler round failed; retrying")
                    busy = False
                for name, task in tasks.items():
                    if task.done() and not self.stopping.is_set():
                        # They only end on stop; anything else is a bug: log it, start again.
                        log.error(
                            f"{name} task ended; restarting it", error=repr(self._ended(task))
                        )
                        tasks[name] = asyncio.create_task(duties[name](), name=name)
                if not busy:
                    await self._idle()
        finally:
            self.fanout_wake.set()
            self.sweeper.wake.set()
            await self._stop_fanout(tasks.pop("fanout"))
            for task in tasks.values():
                # Interrupted, a partition's detach is finished by the next run (FINALIZE);
                # a sweep or fold chunk is one transaction, rolled back.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _retention_loop(self) -> None:
        """Partition upkeep and retention now, then every RETENTION_INTERVAL_S."""
        assert self.retention is not None
        while not self.stopping.is_set():
            try:
                await self.retention.run()
            except Exception:
                metrics.SCHEDULER_ERRORS.inc()
                log.exception("retention run failed; trying again at the next interval")
            await self._wait(self.stopping, self.settings.retention_interval_s)

    async def _fanout_loop(self) -> None:
        """Create message rows chunk after chunk while any fan-out is pending, round-robin
        across mailings (see `fanout`); otherwise wait for a started mailing or the poll."""
        while not self.stopping.is_set():
            self.fanout_wake.clear()
            try:
                chunk = await self.fanout_once()
            except Exception:
                metrics.SCHEDULER_ERRORS.inc()
                log.exception("fan-out chunk failed; retrying")
                # The database may be away: no tight loop, whatever wakes us.
                await self._wait(self.stopping, self.settings.poll_interval_s)
                continue
            if chunk is None:
                await self._wait(self.fanout_wake, self.settings.poll_interval_s)

    async def fanout_once(self) -> fanout.ChunkResult | None:
        """One fan-out chunk; None when no fan-out is pending."""
        started = tracing.now_ns()
        async with self.sessions() as session:
            chunk = await fanout.fanout_chunk(
                session,
                self.settings.fanout_chunk_size,
                frequency_cap=self.settings.frequency_cap,
            )
        if chunk is not None:
            tracing.record_mailing_span(
                tracing.FANOUT,
                chunk.mailing_id,
                started,
                tracing.now_ns(),
                {"mailing.messages.created": chunk.created, "mailing.fanout.done": chunk.done},
            )
            metrics.MESSAGES_CREATED.inc(chunk.created)
            log.info(
                "fan-out chunk",
                mailing_id=chunk.mailing_id,
                created=chunk.created,
                done=chunk.done,
                analyzed=chunk.analyzed,
            )
            # New messages are due: top the send queue up now, not at the next poll.
            self.wake.set()
        return chunk

    async def _stop_fanout(self, task: asyncio.Task[None]) -> None:
        """Let a chunk under way commit (it is one transaction either way), then stop."""
        try:
            await asyncio.wait_for(asyncio.shield(task), self.FANOUT_STOP_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            log.exception("fan-out task failed")

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        """Until `event` is set or `seconds` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> BaseException | None:
        return None if task.cancelled() else task.exception()

    async def _idle(self) -> None:
        """Sleep until an event, the next start time or the poll interval; meanwhile, if due
        messages wait behind a full lease cap, lease more as soon as room appears."""
        timeout = self.settings.poll_interval_s
        try:
            async with self.sessions() as session:
                next_start = await activation.next_start_at(session)
        except Exception:
            # The database is away: poll again after the interval (the round logs the error).
            next_start = None
        if next_start is not None:
            timeout = min(timeout, max((next_start - datetime.now(UTC)).total_seconds(), 0.0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A top-up that filled the room it found: more may be due, so look again as soon as
        # behind a full cap (waiting out the poll instead held a short mailing's last
        # messages back by up to POLL_INTERVAL_S). Only the top-up: the round's other duties
        # keep their pace.
        more = False
        while (remaining := deadline - loop.time()) > 0:
            recheck = self.cap_full or more
            wait = min(remaining, CAP_RECHECK_S) if recheck else remaining
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
                return
            except TimeoutError:
                pass
            if recheck:
                try:
                    more = await self.top_up()
                except Exception:
                    log.exception("leasing up to the cap failed")
                    return

    async def _claim_due_mailings(self, session: AsyncSession, since_ns: int) -> list[Started]:
        """Start the due mailings; each one's activation span links to the request behind its
        latest audit entry (whose `traceparent` the event would carry too, if it came first),
        and its jobs carry that request's id."""
        started = await activation.claim_due_mailings(session)
        for mailing in started:
            if mailing.request_id is not None:
                self.request_ids[mailing.mailing_id] = mailing.request_id
            created_by = (
                tracing.extract({"traceparent": mailing.traceparent})
                if mailing.traceparent is not None
                else None
            )
            tracing.record_activation(mailing.mailing_id, since_ns, tracing.now_ns(), created_by)
        return started

    async def round(self) -> bool:
        """Start due mailings and top the send queue up; True when there is more to do right
        away. The fan-out, sweep, fold and retention run in tasks of their own (`_duties`)."""
        busy = False
        started = tracing.now_ns()
        try:
            async with self.sessions() as session:
                activated = [s.mailing_id for s in await self._claim_due_mailings(session, started)]
                for mailing_id in activated:
                    metrics.MAILINGS_STARTED.inc()
                    log.info("mailing started", mailing_id=mailing_id)
                    busy = True
                if activated:
                    try:
                        await activation.ensure_partitions(session, activated)
                    except Exception:
                        # The fan-out's first chunk tries again (and waits until it succeeds).
                        log.exception("creating message partitions failed", mailing_ids=activated)
        except Exception:
            # The top-up of the mailings already running goes on regardless.
            metrics.SCHEDULER_ERRORS.inc()
            log.exception("starting due mailings failed; retrying")
        if busy:
            # Its first (small) chunk comes next; the task wakes this loop when it is in.
            self.fanout_wake.set()
        busy |= await self.top_up()
        try:
            await self.observe_queue()
        except Exception:
            log.warning("reading the send queue's depth failed", exc_info=True)
        return busy

    async def top_up(self) -> bool:
        """Lease due messages up to the cap and publish them; True when the room was filled."""
        with metrics.TOP_UP_SECONDS.time():
            return await self._top_up()

    async def _top_up(self) -> bool:
        if self.connection is not None and self.connection.is_closed:
            # The broker is away: leases now could not be published (it reconnects itself).
            return False
        async with self.sessions() as session:
            # Test sends first and outside the cap: an operator is waiting for one.
            tests = await leasing.lease_test_sends(
                session, limit=self.settings.lease_batch_size, ttl_s=self.settings.lease_ttl_s
            )
        if tests:
            await self._publish(tests)
        async with self.sessions() as session:
            live, outstanding = await leasing.lease_counts(session)
            metrics.LIVE_LEASES.set(live)
            self.lease_cap.observe(outstanding)
            metrics.LEASE_CAP.set(self.lease_cap.size)
            room = min(self.lease_cap.size - live, self.settings.lease_batch_size)
            self.cap_full = room <= 0
            if room <= 0:
                return False
            started = tracing.now_ns()
            leases = await leasing.lease_due_messages(
                session, limit=room, ttl_s=self.settings.lease_ttl_s
            )
        if leases and tracing.enabled():
            publishing.trace_leases(leases, started, tracing.now_ns())
        if leases:
            self.lease_cap.leased(sum(not lease.reaped for lease in leases))
            await self._publish(leases)
        return len(leases) >= room

    async def _publish(self, leases: list[leasing.Lease]) -> None:
        assert self.topology is not None
        await publishing.publish_leases(
            self.topology,
            leases,
            messages_per_job=self.settings.messages_per_job,
            request_ids=self.request_ids,
            sessions=self.sessions,
        )

    async def observe_queue(self) -> None:
        """Send-queue depth and consumers, every few seconds, for the dashboards."""
        if time.monotonic() - self.queue_checked_at < 5 or self.topology is None:
            return
        self.queue_checked_at = time.monotonic()
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.topology.names.send, passive=True)
            result = queue.declaration_result
            metrics.SEND_QUEUE_MESSAGES.set(result.message_count or 0)
            metrics.SEND_QUEUE_CONSUMERS.set(result.consumer_count or 0)
        finally:
            await channel.close()


async def connect_broker(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(
        url,
        client_properties={"connection_name": "scheduler"},
        reconnect_interval=RECONNECT_INTERVAL_S,
    )
