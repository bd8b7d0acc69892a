"""aio-pika against a quorum queue, from one process: confirmed publishes and consume + ack.

    python -m bench.broker --url amqp://... --queue NAME --sequential 2000 --gathered 20000

Declares NAME as a quorum queue shaped like the send queue, publishes persistent job-sized
messages with publisher confirms (one at a time, then in gathered batches as the scheduler
does), consumes them all acking one by one (as the sender does), then the gathered batch again
acking with `multiple=True` once per 100, and deletes the queue.
Prints one JSON line; `--rabbit-pid` adds the broker's CPU seconds for each step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aio_pika

from bench.system import cpu_seconds
from shared.messaging import encode_jobs


def _message(i: int) -> aio_pika.Message:
    return aio_pika.Message(
        encode_jobs(1, [(i, i)]),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        expiration=3600,
        headers={"mailing_id": 1},
    )


class Step:
    def __init__(self, rabbit_pid: int | None) -> None:
        self.rabbit_pid = rabbit_pid

    def __enter__(self) -> Step:
        self.started = time.perf_counter()
        self.cpu = time.process_time()
        self.rabbit = cpu_seconds(self.rabbit_pid) if self.rabbit_pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.client_cpu = time.process_time() - self.cpu
        self.rabbit_cpu = (cpu_seconds(self.rabbit_pid) - self.rabbit) if self.rabbit_pid else None

    def figures(self, count: int) -> dict[str, Any]:
        return {
            "messages": count,
            "seconds": round(self.seconds, 3),
            "rate": round(count / self.seconds, 1) if self.seconds else 0.0,
            "client_cpu_ms_per_msg": round(self.client_cpu * 1000 / count, 4) if count else None,
            "broker_cpu_ms_per_msg": round(self.rabbit_cpu * 1000 / count, 4)
            if count and self.rabbit_cpu is not None
            else None,
        }


async def _publish_gathered(exchange: Any, queue_name: str, count: int, batch: int) -> None:
    for start in range(0, count, batch):
        n = min(batch, count - start)
        await asyncio.gather(*(exchange.publish(_message(start + j), queue_name) for j in range(n)))


async def _consume(queue: Any, total: int, ack_every: int) -> None:
    """Consume `total` deliveries, acking one by one or with `multiple=True` every `ack_every`."""
    received = 0
    finished = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        received += 1
        if received % ack_every == 0 or received >= total:
            await message.ack(multiple=ack_every > 1)
        if received >= total:
            finished.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(finished.wait(), timeout=max(60.0, total / 200))
    await queue.cancel(tag)


async def run(
    url: str, queue_name: str, sequential: int, gathered: int, batch: int, rabbit_pid: int | None
) -> dict[str, Any]:
    connection = await aio_pika.connect(url)
    results: dict[str, Any] = {"batch": batch}
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(
            queue_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": 5,
            },
        )
        exchange = channel.default_exchange
        try:
            with Step(rabbit_pid) as step:
                for i in range(sequential):
                    await exchange.publish(_message(i), queue_name)
            results["publish_sequential"] = step.figures(sequential)
            with Step(rabbit_pid) as step:
                await _publish_gathered(exchange, queue_name, gathered, batch)
            results["publish_gathered"] = step.figures(gathered)

            consume_channel = await connection.channel()
            await consume_channel.set_qos(prefetch_count=512)
            queue = await consume_channel.get_queue(queue_name, ensure=False)
            with Step(rabbit_pid) as step:
                await _consume(queue, sequential + gathered, ack_every=1)
            results["consume_ack"] = step.figures(sequential + gathered)
            # The same again, acking with multiple=True once per 100 deliveries (in tag order).
            await _publish_gathered(exchange, queue_name, gathered, batch)
            with Step(rabbit_pid) as step:
                await _consume(queue, gathered, ack_every=100)
            results["consume_ack_multiple"] = step.figures(gathered)
        finally:
            await channel.queue_delete(queue_name)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--gathered", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rabbit-pid", type=int)
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(args.url, args.queue, args.sequential, args.gathered, args.batch, args.rabbit_pid)
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
