"""RabbitMQ topology, declared idempotently by every service at start.

    {ns}.events  (topic)   mailing.created|updated|deleted: wake-up hints for the scheduler
    {ns}.send    (direct)  -> queue {ns}.send: jobs of up to MESSAGES_PER_JOB messages of one
                              mailing, {"mailing_id", "items": [[id, token], ...]}
    {ns}.retry   (direct)  -> queues {ns}.retry.<ms>: fixed TTL, dead-lettered back to {ns}.send
    {ns}.dead    (fanout)  -> queue {ns}.dead: jobs that expired (end time) or hit the delivery
                              limit (poison); one consumer decides what they mean
    queue {ns}.parked      poison jobs kept for a person to look at

Quorum queues with at-least-once dead-lettering (which requires `reject-publish` overflow),
so a dead-lettered job is never dropped on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.domain.end_time import job_ttl_s

SEND_ROUTING_KEY = "send"
# A robust connection tries again this often after the broker went away (aio-pika: 5 s), so
# sending resumes within about a second of a broker restart.
RECONNECT_INTERVAL_S = 1.0
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
DELIVERY_LIMIT = 5


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


@dataclass(frozen=True)
class Names:
    namespace: str

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def send(self) -> str:
        return f"{self.namespace}.send"

    @property
    def retry(self) -> str:
        return f"{self.namespace}.retry"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.namespace}.retry.{delay_ms}ms"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def parked(self) -> str:
        return f"{self.namespace}.parked"


@dataclass
class Topology:
    names: Names
    channel: AbstractChannel
    events: AbstractExchange
    send_exchange: AbstractExchange
    retry_exchange: AbstractExchange
    send_queue: AbstractQueue
    dead_queue: AbstractQueue
    parked_queue: AbstractQueue


def delay_ms(delay_s: float) -> int:
    return round(delay_s * 1000)


async def declare_topology(
    channel: AbstractChannel, namespace: str, retry_delays_s: list[float]
) -> Topology:
    names = Names(namespace)
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    send_x = await channel.declare_exchange(names.send, aio_pika.ExchangeType.DIRECT, durable=True)
    retry_x = await channel.declare_exchange(
        names.retry, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead_x = await channel.declare_exchange(names.dead, aio_pika.ExchangeType.FANOUT, durable=True)

    at_least_once = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    send_q = await channel.declare_queue(
        names.send,
        durable=True,
        arguments=_quorum(
            **at_least_once,
            **{"x-delivery-limit": DELIVERY_LIMIT, "x-dead-letter-exchange": names.dead},
        ),
    )
    await send_q.bind(send_x, SEND_ROUTING_KEY)
    for delay in retry_delays_s:
        ms = delay_ms(delay)
        retry_q = await channel.declare_queue(
            names.retry_queue(ms),
            durable=True,
            arguments=_quorum(
                **at_least_once,
                **{
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": names.send,
                    "x-dead-letter-routing-key": SEND_ROUTING_KEY,
                },
            ),
        )
        await retry_q.bind(retry_x, str(ms))
    dead_q = await channel.declare_queue(names.dead, durable=True, arguments=_quorum())
    await dead_q.bind(dead_x, "")
    parked_q = await channel.declare_queue(names.parked, durable=True, arguments=_quorum())
    return Topology(names, channel, events, send_x, retry_x, send_q, dead_q, parked_q)


@dataclass(frozen=True, slots=True)
class Job:
    """One message of a send job: its id and the fencing token of the lease it was sent under."""

    message_id: int
    token: int
    mailing_id: int


def encode_jobs(mailing_id: int, items: Iterable[tuple[int, int]]) -> bytes:
    return orjson.dumps({"mailing_id": mailing_id, "items": [[i, t] for i, t in items]})


def decode_jobs(body: bytes) -> list[Job]:
    """The messages of one send job. Raises ValueError for anything that is not a job."""
    try:
        data = orjson.loads(body)  # orjson.JSONDecodeError is a ValueError
        mailing_id = int(data["mailing_id"])
        return [Job(int(i), int(t), mailing_id) for i, t in data["items"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a send job: {body[:100]!r}") from exc


def packed(items: Iterable[T], key: Callable[[T], K], size: int) -> Iterator[tuple[K, list[T]]]:
    """The items grouped by `key` (first-seen order), each group cut into jobs of at most
    `size`: what one broker message may carry."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    for group_key, group in groups.items():
        for start in range(0, len(group), size):
            yield group_key, group[start : start + size]


def jobs_message(
    mailing_id: int,
    items: Iterable[tuple[int, int]],
    *,
    expiration_s: float | None,
    headers: dict[str, Any],
) -> aio_pika.Message:
    return aio_pika.Message(
        encode_jobs(mailing_id, items),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        # Left in the queue past the mailing's end, the job dead-letters as 'expired'.
        expiration=job_ttl_s(expiration_s) if expiration_s is not None else None,
        headers=headers,
    )


async def publish_many(
    exchange: AbstractExchange, messages: Iterable[tuple[aio_pika.Message, str]]
) -> list[BaseException | None]:
    """Publish concurrently, each awaiting its broker confirm; per message, the error or None."""
    results = await asyncio.gather(
        *(exchange.publish(message, routing_key) for message, routing_key in messages),
        return_exceptions=True,
    )
    return [r if isinstance(r, BaseException) else None for r in results]
