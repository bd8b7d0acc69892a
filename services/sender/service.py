"""The sender's lifecycle: connect the parts, consume while the breaker allows, stop cleanly.

The parts, a module each:
- `intake`: send jobs in from the broker, micro-batches out, acks once a job is done;
- `sending`: claim a batch, call the provider, write the results, requeue retries;
- `outcome`: the pure policy (claimed message + provider answer + clock -> result);
- `dead_letters`: expired and poison jobs, and the parked queue;
- `store`: the SQL.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import status_report, store
from services.sender.breaker import Breaker, State
from services.sender.dead_letters import DeadLetters
from services.sender.intake import Intake
from services.sender.provider import ProviderClient
from services.sender.routing import Router
from services.sender.sending import ClaimAndSend, claim_budget
from shared import metrics
from shared.loop_lag import LoopLag
from shared.messaging import Topology, declare_topology
from shared.settings import SenderSettings

log = structlog.get_logger("sender")

__all__ = ["Sender", "claim_budget", "prefetch_jobs"]

BIND_WAIT_S = 3.0


def prefetch_jobs(settings: SenderSettings) -> int:
    """The broker's prefetch count: PREFETCH messages in jobs of MESSAGES_PER_JOB, but no more
    than twice what the sender may hold claimed. Prefetched jobs hold live leases: a sender that
    hoards more than it can start (a rate-limited one, or one that froze) keeps the scheduler's
    lease cap full until those leases lapse."""
    messages = min(settings.prefetch, 2 * claim_budget(settings))
    return max(2, -(-messages // settings.messages_per_job))


class Sender:
    def __init__(
        self,
        settings: SenderSettings,
        session_factory: async_sessionmaker[AsyncSession],
        connection: AbstractRobustConnection,
        provider: ProviderClient,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.connection = connection
        self.provider = provider
        self.router = router
        self.topology: Topology | None = None
        self.sending = ClaimAndSend(settings, session_factory, provider, router=router)
        self.dead_letters = DeadLetters(
            session_factory, self._topology, margin_s=settings.end_safety_margin_s
        )
        self.intake = Intake(
            batch_size=self.sending.batch_size,
            linger_s=settings.batch_linger_ms / 1000,
            batches_in_flight=settings.batches_in_flight,
            process=self.sending.process,
            park=self.dead_letters.park,
        )
        self.consumer_tag: str | None = None
        self.loop_lag = LoopLag(metrics.EVENT_LOOP_LAG)
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def breaker(self) -> Breaker:
        return self.sending.breaker

    def _topology(self) -> Topology:
        assert self.topology is not None
        return self.topology

    async def setup(self) -> None:
        if self.router is not None:
            # The providers before the first job: binds up (or given a few seconds), so the
            # first messages are not failed over or held only because a bind was still coming.
            await self.router.start()
            if not await self.router.wait_bound(BIND_WAIT_S):
                log.warning("smpp binds not all up yet; their routes fail over meanwhile")
        channel = await self.connection.channel(publisher_confirms=True)
        # PREFETCH counts messages; the broker counts jobs.
        await channel.set_qos(prefetch_count=prefetch_jobs(self.settings))
        self.topology = await declare_topology(
            channel, self.settings.amqp_namespace, self.settings.retry_delays_s
        )
        self.sending.topology = self.topology
        dead_channel = await self.connection.channel(publisher_confirms=True)
        await dead_channel.set_qos(prefetch_count=16)
        dead_queue = await dead_channel.get_queue(self.topology.names.dead, ensure=False)
        await dead_queue.consume(self.dead_letters.on_dead_letter)
        await self._start_consuming()

    async def run(self) -> None:
        self._tasks = [
            asyncio.create_task(self.intake.run(), name="batcher"),
            asyncio.create_task(self._watch_breaker(), name="breaker"),
            asyncio.create_task(self.sending.writer.run(), name="result-writer"),
            asyncio.create_task(self._watch_stopped_mailings(), name="stopped-mailings"),
            asyncio.create_task(self.loop_lag.run(), name="loop-lag"),
        ]
        await self.stopping.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop taking jobs, finish the batches in hand; unacked jobs return to the queue."""
        await self._stop_consuming()
        await self.intake.drain(self.settings.provider_timeout_s + 5)
        if self.router is not None:
            # The windows drain (the batches above are done), then every bind unbinds.
            await self.router.close(self.settings.provider_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.intake.cancel()

    async def _start_consuming(self) -> None:
        assert self.topology is not None
        if self.consumer_tag is None:
            self.consumer_tag = await self.topology.send_queue.consume(self.intake.on_job)
            log.info("consuming send jobs", queue=self.topology.names.send)

    async def _stop_consuming(self) -> None:
        if self.consumer_tag is not None and self.topology is not None:
            tag, self.consumer_tag = self.consumer_tag, None
            with contextlib.suppress(Exception):
                await self.topology.send_queue.cancel(tag)

    @property
    def consuming(self) -> bool:
        return self.consumer_tag is not None

    async def _watch_breaker(self) -> None:
        while True:
            if self.breaker.state == State.OPEN:
                if self.consuming:
                    await self._stop_consuming()
                    log.warning(
                        "breaker open: stopped consuming",
                        reason=self.breaker.reason,
                        cooldown_s=self.breaker.cooldown,
                    )
                if self.provider.tokens.refresh():
                    log.info("provider token changed; probing now")
                    self.breaker.retry_now()
            if not self.consuming and self.breaker.allows_traffic() and not self.stopping.is_set():
                await self._start_consuming()
            status_report.observe(self.sessions, self.breaker)  # for the console's dashboard
            await asyncio.sleep(0.1)

    async def _watch_stopped_mailings(self) -> None:
        """Paused or deleted mailings, so requests not yet started for them are not sent."""
        while True:
            await asyncio.sleep(0.25)
            if not self.sending.held:
                self.sending.stopped = {}
                continue
            try:
                async with self.sessions() as session:
                    self.sending.stopped = await store.stopped_mailings(
                        session, list(self.sending.held)
                    )
            except Exception as exc:
                log.warning("could not check mailing states", error=str(exc)[:200])
