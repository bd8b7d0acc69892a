"""A private namespace of exchanges and queues per test, deleted afterwards."""

from __future__ import annotations

import os
import uuid

import aio_pika

from shared.messaging import Names, delay_ms

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def new_namespace() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def delete_namespace(namespace: str, retry_delays_s: list[float]) -> None:
    names = Names(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        queues = [names.send, names.dead, names.parked]
        queues += [names.retry_queue(delay_ms(d)) for d in retry_delays_s]
        for queue in queues:
            channel = await connection.channel()
            try:
                await channel.queue_delete(queue)
            except Exception:  # never declared in this test; the channel closes, take a new one
                pass
        for exchange in (names.events, names.send, names.retry, names.dead):
            channel = await connection.channel()
            try:
                await channel.exchange_delete(exchange)
            except Exception:
                pass


async def queue_depth(namespace: str, queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(f"{namespace}.{queue}", passive=True)
        return int(declared.declaration_result.message_count or 0)
