"""Dead letters: jobs the broker gave up on, and garbage parked for a human.

A job dead-letters when it sat in the send queue past its TTL (the mailing's end: its
messages expire, or go back to pending if the end moved), or when it was delivered too often
(a poison job: its open messages fail). Either way the job's body is kept in the parked queue
when it cannot be handled.
"""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import store
from services.sender.intake import Delivery
from shared import metrics
from shared.messaging import Topology, decode_jobs

log = structlog.get_logger("sender")


class DeadLetters:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        topology: Callable[[], Topology],
        *,
        margin_s: float,
    ) -> None:
        self.sessions = sessions
        self.topology = topology
        self.margin_s = margin_s

    async def on_dead_letter(self, delivery: Delivery) -> None:
        reason = death_reason(delivery)
        try:
            jobs = decode_jobs(delivery.body)
        except ValueError as exc:
            await self.park(delivery, f"dead letter ({reason}): {exc}")
            return
        metrics.DEAD_LETTERS.labels(reason).inc()
        if reason == "expired":
            statuses = await store.with_retry(
                self.sessions,
                lambda s: store.dead_letter_expired(s, jobs, margin_s=self.margin_s),
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
            failed = await store.with_retry(
                self.sessions,
                lambda s: store.dead_letter_poison(s, jobs, f"poison job: {reason}"),
                "dead letter",
            )
            ids = [job.message_id for job in jobs]
            log.error("poison job parked", message_ids=ids, failed=failed, reason=reason)
            await self.publish_parked(delivery.body, reason)
        await delivery.ack()

    async def park(self, delivery: Delivery, reason: str) -> None:
        log.error("poison job parked", reason=reason)
        await self.publish_parked(delivery.body, reason)
        await delivery.ack()

    async def publish_parked(self, body: bytes, reason: str) -> None:
        topology = self.topology()
        await topology.channel.default_exchange.publish(
            aio_pika.Message(
                body, headers={"reason": reason}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            topology.names.parked,
        )


def death_reason(delivery: Delivery) -> str:
    headers = delivery.headers or {}
    reason = headers.get("x-first-death-reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    return str(reason or "unknown")
