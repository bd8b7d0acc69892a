"""The sender: take send jobs, claim their messages in micro-batches, call the provider,
write the results, then ack.

A job carries up to MESSAGES_PER_JOB messages of one mailing; the batcher cuts the stream of
messages into micro-batches of BATCH_SIZE whatever the job boundaries. Per batch: one claim
statement, concurrent provider requests, results written a few milliseconds after each answer
(many per statement). A job is acknowledged only once every one of its messages is finished
(its result in the database, or dropped), so a crash never loses a result that a redelivery
would then send again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiolimiter import AsyncLimiter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import status_report, store
from services.sender.breaker import Breaker, State
from services.sender.budget import ClaimBudget, Share
from services.sender.limit import ConcurrencyLimit
from services.sender.provider import Outcome, ProviderClient, SendResult
from services.sender.results import ResultWriter
from shared import metrics
from shared.domain.retry import retry_delay
from shared.messaging import (
    Job,
    Topology,
    declare_topology,
    decode_jobs,
    delay_ms,
    jobs_message,
    packed,
    publish_many,
)
from shared.settings import SenderSettings

log = structlog.get_logger("sender")
T = TypeVar("T")

Delivery = AbstractIncomingMessage
# Requests at once before the provider has answered (at start, after the breaker opened).
SLOW_START_CONNECTIONS = 4


@dataclass(eq=False, slots=True)
class Held:
    """One broker delivery (a job) and how many of its messages are not finished yet."""

    delivery: Delivery
    left: int
    request_id: str | None


@dataclass(eq=False, slots=True)
class Item:
    """One message of a job, as the batcher hands it on."""

    job: Job
    held: Held
    finished: bool = False


def prefetch_jobs(settings: SenderSettings) -> int:
    """The broker's prefetch count: PREFETCH messages in jobs of MESSAGES_PER_JOB, but no more
    than twice what the sender may hold claimed. Prefetched jobs hold live leases: a sender that
    hoards more than it can start (a rate-limited one, or one that froze) keeps the scheduler's
    window full until those leases lapse."""
    messages = min(settings.prefetch, 2 * claim_budget(settings))
    return max(2, -(-messages // settings.messages_per_job))


def claim_budget(settings: SenderSettings) -> int:
    """How many messages a sender may hold claimed: what its connections (and rate limit)
    start well within the sending lease."""
    budget = 2 * settings.max_connections
    if settings.rate_limit_per_s is not None:
        budget = min(budget, int(settings.rate_limit_per_s * settings.sending_lease_s / 4))
    return max(budget, 1)


class Sender:
    def __init__(
        self,
        settings: SenderSettings,
        session_factory: async_sessionmaker[AsyncSession],
        connection: AbstractRobustConnection,
        provider: ProviderClient,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.connection = connection
        self.provider = provider
        self.breaker = Breaker(
            threshold=settings.breaker_failure_threshold,
            cooldown_s=settings.breaker_cooldown_s,
            max_cooldown_s=settings.breaker_max_cooldown_s,
        )
        self.limiter = (
            AsyncLimiter(settings.rate_limit_per_s, 1) if settings.rate_limit_per_s else None
        )
        self.inbox: asyncio.Queue[Item] = asyncio.Queue()
        self.slots = asyncio.Semaphore(settings.batches_in_flight)
        self.connections = ConcurrencyLimit(
            initial=SLOW_START_CONNECTIONS, maximum=settings.max_connections
        )
        self.budget = ClaimBudget(claim_budget(settings))
        self.writer = ResultWriter(self._write_batch, linger_s=0.005, max_batch=500)
        # Mailings with claimed messages in this process, and those of them an admin stopped.
        self.held: Counter[int] = Counter()
        self.stopped: dict[int, str] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.topology: Topology | None = None
        self.consumer_tag: str | None = None
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def setup(self) -> None:
        channel = await self.connection.channel(publisher_confirms=True)
        # PREFETCH counts messages; the broker counts jobs.
        await channel.set_qos(prefetch_count=prefetch_jobs(self.settings))
        self.topology = await declare_topology(
            channel, self.settings.amqp_namespace, self.settings.retry_delays_s
        )
        dead_channel = await self.connection.channel(publisher_confirms=True)
        await dead_channel.set_qos(prefetch_count=16)
        dead_queue = await dead_channel.get_queue(self.topology.names.dead, ensure=False)
        await dead_queue.consume(self._on_dead_letter)
        await self._start_consuming()

    async def run(self) -> None:
        self._tasks = [
            asyncio.create_task(self._batcher(), name="batcher"),
            asyncio.create_task(self._watch_breaker(), name="breaker"),
            asyncio.create_task(self.writer.run(), name="result-writer"),
            asyncio.create_task(self._watch_stopped_mailings(), name="stopped-mailings"),
        ]
        await self.stopping.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop taking jobs, finish the batches in hand; unacked jobs return to the queue."""
        await self._stop_consuming()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.provider_timeout_s + 5):
                while self.in_flight or not self.inbox.empty():
                    if self.in_flight:
                        await asyncio.wait(set(self.in_flight))
                    else:  # the batcher is about to take what is left in the inbox
                        await asyncio.sleep(self.settings.batch_linger_ms / 1000)
        for task in self._tasks:
            task.cancel()
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(*self._tasks, *self.in_flight, return_exceptions=True)

    async def _start_consuming(self) -> None:
        assert self.topology is not None
        if self.consumer_tag is None:
            self.consumer_tag = await self.topology.send_queue.consume(self._on_job)
            log.info("consuming send jobs", queue=self.topology.names.send)

    async def _stop_consuming(self) -> None:
        if self.consumer_tag is not None and self.topology is not None:
            tag, self.consumer_tag = self.consumer_tag, None
            with contextlib.suppress(Exception):
                await self.topology.send_queue.cancel(tag)

    @property
    def consuming(self) -> bool:
        return self.consumer_tag is not None

    # --- intake and batching ---------------------------------------------------------------

    async def _on_job(self, delivery: Delivery) -> None:
        try:
            jobs = decode_jobs(delivery.body)
        except ValueError as exc:
            await self._park(delivery, str(exc))
            return
        metrics.JOBS_RECEIVED.inc(len(jobs))
        if not jobs:
            await self._ack([delivery])
            return
        request_id = (delivery.headers or {}).get("request_id")
        held = Held(delivery, len(jobs), request_id if isinstance(request_id, str) else None)
        for job in jobs:
            self.inbox.put_nowait(Item(job, held))

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        # A batch must fit in half the claim budget, so the next one is claimed while this one
        # is sending (a budget-sized batch would wait for its predecessor to finish).
        size = max(1, min(self.settings.batch_size, self.budget.size // 2))
        linger = self.settings.batch_linger_ms / 1000
        while True:
            batch = [await self.inbox.get()]
            deadline = loop.time() + linger
            while len(batch) < size:
                try:
                    batch.append(self.inbox.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.inbox.get(), remaining))
                except TimeoutError:
                    break
            await self.slots.acquire()
            task = asyncio.create_task(self._process(batch))
            self.in_flight.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed", exc_info=task.exception())

    # --- one batch -------------------------------------------------------------------------

    async def _process(self, items: list[Item]) -> None:
        if not self.breaker.allows_traffic():
            await self._release([item.job for item in items])
            await self._finish(items)
            return
        share = await self.budget.take(len(items))
        try:
            await self._claim_and_send(items, share)
        except Exception:
            # A bug, not a fault (those are retried inside): ack what is left rather than hold
            # the jobs forever; their leases lapse and the reaper queues the messages again.
            log.exception("batch failed; its unfinished messages come back when leases lapse")
            await self._finish([item for item in items if not item.finished])
        finally:
            share.give_all()

    async def _claim_and_send(self, items: list[Item], share: Share) -> None:
        claimed = await self._with_db_retry(
            lambda s: store.claim(
                s,
                [item.job for item in items],
                margin_s=self.settings.end_safety_margin_s,
                lease_s=self.settings.sending_lease_s,
            ),
            "claim",
        )
        # The item each claimed message is sent for; the rest (stale tokens, duplicates of a
        # redelivered job, messages not to be sent now) are finished at once.
        by_key: dict[tuple[int, int], Item] = {}
        unsent: list[Item] = []
        for item in items:
            job = item.job
            if (job.message_id, job.token) in by_key:
                unsent.append(item)
            else:
                by_key[job.message_id, job.token] = item
        sending: list[tuple[store.Claimed, Item]] = []
        for c in claimed:
            item = by_key.pop((c.message_id, c.token))
            if c.status == "sending":
                sending.append((c, item))
            else:
                unsent.append(item)
        unsent.extend(by_key.values())
        if len(claimed) < len(items):
            metrics.JOBS_DROPPED.labels("stale").inc(len(items) - len(claimed))
        for c in claimed:
            if c.status != "sending":
                metrics.JOBS_DROPPED.labels(c.status).inc()
                log.info(
                    "message not sent",
                    message_id=c.message_id,
                    mailing_id=c.mailing_id,
                    client_id=c.client_id,
                    status=c.status,
                )
        share.give(len(unsent))
        await self._finish(unsent)
        if not sending:
            return
        for c, _ in sending:
            self.held[c.mailing_id] += 1
        try:
            await self._send_claimed(sending, share)
        finally:
            for c, _ in sending:
                self.held[c.mailing_id] -= 1
                if self.held[c.mailing_id] <= 0:
                    del self.held[c.mailing_id]

    async def _send_claimed(self, sending: list[tuple[store.Claimed, Item]], share: Share) -> None:
        async def finish(item: Item, result: store.Result) -> None:
            share.give()  # no longer waiting to start: room for the next claim
            await self.writer.submit(result)
            await self._finish([item])

        async def send_and_finish(c: store.Claimed, item: Item) -> None:
            await finish(item, await self._send_one(c, item.held.request_id))

        if self.breaker.state == State.HALF_OPEN:
            # Probe with one request before letting the rest through.
            await send_and_finish(*sending[0])
            rest = sending[1:]
            if self.breaker.state != State.CLOSED:
                await asyncio.gather(*(finish(item, self._released(c)) for c, item in rest))
                return
            sending = rest
        await asyncio.gather(*(send_and_finish(c, item) for c, item in sending))

    async def _finish(self, items: Iterable[Item]) -> None:
        """Count these messages done; ack each job whose messages are all done."""
        done = []
        for item in items:
            if item.finished:
                continue
            item.finished = True
            item.held.left -= 1
            if item.held.left == 0:
                done.append(item.held.delivery)
        if done:
            await self._ack(done)

    async def _send_one(self, c: store.Claimed, request_id: str | None) -> store.Result:
        # Wait for a connection here, not in the HTTP pool, so the end-time check below is made
        # when the request really starts.
        await self.connections.acquire()
        try:
            return await self._send_now(c, request_id)
        finally:
            self.connections.release()

    async def _send_now(self, c: store.Claimed, request_id: str | None) -> store.Result:
        if not self.breaker.allows_traffic():
            return self._released(c)
        stopped = self.stopped.get(c.mailing_id)
        if stopped is not None:
            # Paused or deleted since the claim: paused goes back to pending, deleted is over.
            metrics.JOBS_DROPPED.labels(stopped).inc()
            return store.Result(c.message_id, c.mailing_id, c.token, stopped, attempted=0)
        if self.limiter is not None:
            await self.limiter.acquire()
        # A lease that can no longer cover this request may already be another sender's
        # (this process was frozen or starved): give the message back instead of sending it.
        if (
            time.monotonic() - c.claimed_at + self.provider.timeout_s
            >= self.settings.sending_lease_s
        ):
            metrics.JOBS_DROPPED.labels("lease_lapsing").inc()
            return store.Result(c.message_id, c.mailing_id, c.token, "pending", attempted=0)
        # The clock moved since the claim (rate limit, a probe first): count from the claim.
        seconds_to_end = c.seconds_to_end - (time.monotonic() - c.claimed_at)
        if seconds_to_end <= self.settings.end_safety_margin_s:
            # Too close to the end to start a request: it might land after the end.
            return store.Result(
                c.message_id, c.mailing_id, c.token, "expired", "end time reached", attempted=0
            )
        started = time.perf_counter()
        result = await self.provider.send(c.message_id, c.phone, c.text, seconds_to_end)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        fields: dict[str, object] = {
            "message_id": c.message_id,
            "mailing_id": c.mailing_id,
            "client_id": c.client_id,
            "latency_ms": latency_ms,
        }
        if request_id is not None:
            fields["request_id"] = request_id
        if result.outcome is Outcome.SENT:
            self.breaker.record_success()
            self.connections.grow()
            log.info("provider accepted message", **fields)
            return store.Result(c.message_id, c.mailing_id, c.token, "sent")
        if result.outcome is Outcome.UNAUTHORIZED:
            self.breaker.open("unauthorized")
            self.connections.reset()
            log.error(
                "ALERT provider refused our token; sending paused until it changes",
                **fields,
                error=result.error,
            )
            return self._released(c)
        if result.outcome is Outcome.REJECTED:
            self.breaker.record_success()  # the provider is up; it refuses this message
            self.connections.grow()
            log.warning("provider rejected message", **fields, error=result.error)
            return store.Result(c.message_id, c.mailing_id, c.token, "failed", result.error)
        if self.breaker.record_failure():
            self.connections.reset()
            log.warning("provider failing; breaker open", cooldown_s=self.breaker.cooldown)
        return self._retry_or_give_up(c, result, fields)

    def _retry_or_give_up(
        self, c: store.Claimed, result: SendResult, fields: dict[str, object]
    ) -> store.Result:
        attempt = c.attempts + 1
        if attempt >= self.settings.max_attempts:
            log.warning("message failed: retries exhausted", **fields, error=result.error)
            return store.Result(
                c.message_id, c.mailing_id, c.token, "failed", f"retries exhausted: {result.error}"
            )
        delay = retry_delay(attempt, self.settings.retry_delays_s, result.retry_after)
        # Back in time to be sent, after the delay and with the margin still left?
        seconds_to_end = c.seconds_to_end - (time.monotonic() - c.claimed_at)
        if seconds_to_end - delay <= self.settings.end_safety_margin_s:
            log.info("message expired: no time left to retry", **fields, error=result.error)
            return store.Result(
                c.message_id,
                c.mailing_id,
                c.token,
                "expired",
                f"end time reached; last: {result.error}",
            )
        log.info(
            "message will be retried", **fields, error=result.error, delay_s=delay, attempt=attempt
        )
        return store.Result(
            c.message_id, c.mailing_id, c.token, "retrying", result.error, delay_s=delay
        )

    def _released(self, c: store.Claimed) -> store.Result:
        delay = max(self.breaker.reopens_at - time.monotonic(), 0.0)
        return store.Result(
            c.message_id, c.mailing_id, c.token, "pending", None, delay_s=delay, attempted=0
        )

    async def _write_batch(self, results: Sequence[store.Result]) -> dict[int, str]:
        written = await self._with_db_retry(
            lambda s: store.write_results(s, results, lease_s=self.settings.sending_lease_s),
            "write results",
        )
        for r in results:
            if written.get(r.message_id) is not None:
                metrics.MESSAGES_FINISHED.labels(r.status).inc()
        retries = [r for r in results if written.get(r.message_id) == "retrying"]
        if retries:
            await self._publish_retries(retries)
        return written

    async def _publish_retries(self, retries: Sequence[store.Result]) -> None:
        """One job per mailing and delay tier (and MESSAGES_PER_JOB messages)."""
        assert self.topology is not None
        jobs = packed(
            retries, lambda r: (r.mailing_id, delay_ms(r.delay_s)), self.settings.messages_per_job
        )
        errors = await publish_many(
            self.topology.retry_exchange,
            (
                (
                    jobs_message(
                        mailing_id,
                        ((r.message_id, r.token) for r in job),
                        expiration_s=None,
                        headers={"mailing_id": mailing_id},
                    ),
                    str(tier_ms),
                )
                for (mailing_id, tier_ms), job in jobs
            ),
        )
        failed = sum(error is not None for error in errors)
        if failed:
            # Their lease lapses after the delay and the scheduler queues them again.
            log.warning("retry publish failed; the scheduler will re-queue", failed=failed)

    async def _release(self, jobs: list[Job]) -> None:
        delay = max(self.breaker.reopens_at - time.monotonic(), 0.0)
        await self._with_db_retry(lambda s: store.release(s, jobs, delay_s=delay), "release")
        metrics.JOBS_DROPPED.labels("breaker_open").inc(len(jobs))

    async def _ack(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await delivery.ack()
            except Exception as exc:
                # The channel closed (broker restart): the job comes back and finds its message
                # already written, so it is dropped without a second send.
                log.warning("ack failed; job will be redelivered", error=str(exc))

    async def _park(self, delivery: Delivery, reason: str) -> None:
        assert self.topology is not None
        log.error("poison job parked", reason=reason)
        await self._publish_parked(delivery.body, reason)
        await delivery.ack()

    async def _publish_parked(self, body: bytes, reason: str) -> None:
        assert self.topology is not None
        channel = self.topology.channel
        await channel.default_exchange.publish(
            aio_pika.Message(
                body, headers={"reason": reason}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            self.topology.names.parked,
        )

    async def _with_db_retry(self, action: Callable[[AsyncSession], Awaitable[T]], what: str) -> T:
        """Keep trying through a database outage; the jobs stay unacked meanwhile."""
        pause = 0.1
        while True:
            try:
                async with self.sessions() as session:
                    return await action(session)
            except Exception as exc:
                if what == "write results":
                    metrics.RESULT_WRITE_RETRIES.inc()
                log.warning("database call failed; retrying", what=what, error=str(exc)[:200])
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    # --- breaker supervision ---------------------------------------------------------------

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
        while True:
            await asyncio.sleep(0.25)
            if not self.held:
                self.stopped = {}
                continue
            try:
                async with self.sessions() as session:
                    self.stopped = await store.stopped_mailings(session, list(self.held))
            except Exception as exc:
                log.warning("could not check mailing states", error=str(exc)[:200])

    # --- dead letters ----------------------------------------------------------------------

    async def _on_dead_letter(self, delivery: Delivery) -> None:
        reason = _death_reason(delivery)
        try:
            jobs = decode_jobs(delivery.body)
        except ValueError as exc:
            await self._park(delivery, f"dead letter ({reason}): {exc}")
            return
        metrics.DEAD_LETTERS.labels(reason).inc()
        ids = [job.message_id for job in jobs]
        if reason == "expired":
            statuses = await self._with_db_retry(
                lambda s: store.dead_letter_expired(
                    s, jobs, margin_s=self.settings.end_safety_margin_s
                ),
                "dead letter",
            )
            for job in jobs:
                log.info(
                    "expired job handled",
                    message_id=job.message_id,
                    mailing_id=job.mailing_id,
                    status=statuses.get(job.message_id),
                )
        else:
            failed = await self._with_db_retry(
                lambda s: store.dead_letter_poison(s, jobs, f"poison job: {reason}"),
                "dead letter",
            )
            log.error("poison job parked", message_ids=ids, failed=failed, reason=reason)
            await self._publish_parked(delivery.body, reason)
        await delivery.ack()


def _death_reason(delivery: Delivery) -> str:
    headers = delivery.headers or {}
    reason = headers.get("x-first-death-reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    return str(reason or "unknown")
