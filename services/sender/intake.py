"""Intake and batching: send jobs in from the broker, micro-batches out, acks when done.

A job (one broker delivery) carries up to MESSAGES_PER_JOB messages of one mailing; the
batcher cuts the stream of messages into micro-batches of BATCH_SIZE whatever the job
boundaries. A job is acknowledged only once every one of its messages is finished (its result
in the database, or dropped), so a crash never loses a result that a redelivery would then
send again.

`Message` is the one reference to a message inside the sender: the job that brought it, its
envelope (the broker delivery to ack), and once claimed, what the claim returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.context import Context

from services.sender.store import Claimed
from shared import metrics, tracing
from shared.messaging import Job, decode_jobs

log = structlog.get_logger("sender")

Delivery = AbstractIncomingMessage


@dataclass(eq=False, slots=True)
class Envelope:
    """One broker delivery (a job) and how many of its messages are not finished yet."""

    delivery: Delivery
    left: int
    request_id: str | None
    # The W3C trace context of the job's publish span (None while tracing is off).
    trace: Context | None = None


@dataclass(eq=False, slots=True)
class Message:
    """One message through the sender, from its job to its result."""

    job: Job
    envelope: Envelope
    claimed: Claimed | None = None  # set by a claim that made it `sending`
    finished: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return self.job.message_id, self.job.token


class Intake:
    def __init__(
        self,
        *,
        batch_size: int,
        linger_s: float,
        batches_in_flight: int,
        process: Callable[[list[Message]], Coroutine[Any, Any, None]],
        park: Callable[[Delivery, str], Awaitable[None]],
    ) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.slots = asyncio.Semaphore(batches_in_flight)
        self.in_flight: set[asyncio.Task[None]] = set()
        self._process = process
        self._park = park

    async def on_job(self, delivery: Delivery) -> None:
        try:
            jobs = decode_jobs(delivery.body)
        except ValueError as exc:
            await self._park(delivery, str(exc))
            return
        metrics.JOBS_RECEIVED.inc(len(jobs))
        if not jobs:
            await ack([delivery])
            return
        request_id = (delivery.headers or {}).get("request_id")
        envelope = Envelope(
            delivery,
            len(jobs),
            request_id if isinstance(request_id, str) else None,
            tracing.extract(delivery.headers),
        )
        for job in jobs:
            self.inbox.put_nowait(Message(job, envelope))

    async def run(self) -> None:
        """The batcher: up to `batch_size` messages or `linger_s`, whichever comes first."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.inbox.get()]
            deadline = loop.time() + self.linger_s
            while len(batch) < self.batch_size:
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

    async def drain(self, timeout_s: float) -> None:
        """Finish the batches in hand and those about to be cut, within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.in_flight or not self.inbox.empty():
                    if self.in_flight:
                        await asyncio.wait(set(self.in_flight))
                    else:  # the batcher is about to take what is left in the inbox
                        await asyncio.sleep(self.linger_s)

    async def cancel(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)


async def finish(messages: Iterable[Message]) -> None:
    """Count these messages done; ack each job whose messages are all done."""
    done = []
    for message in messages:
        if message.finished:
            continue
        message.finished = True
        message.envelope.left -= 1
        if message.envelope.left == 0:
            done.append(message.envelope.delivery)
    if done:
        await ack(done)


async def ack(deliveries: Iterable[Delivery]) -> None:
    for delivery in deliveries:
        try:
            await delivery.ack()
        except Exception as exc:
            # The channel closed (broker restart): the job comes back and finds its message
            # already written, so it is dropped without a second send.
            log.warning("ack failed; job will be redelivered", error=str(exc))
