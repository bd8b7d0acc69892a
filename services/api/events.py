"""Wake-up hints for the scheduler, published after a mailing change commits.

PostgreSQL is the truth: a lost event only delays work until the scheduler's next poll,
so a failed publish is logged and never fails the request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from shared import tracing
from shared.messaging import RECONNECT_INTERVAL_S, Names

log = structlog.get_logger("api.events")


class EventPublisher(Protocol):
    async def mailing_changed(self, event: str, mailing_id: int) -> None: ...


class NoEvents:
    async def mailing_changed(self, event: str, mailing_id: int) -> None:
        return None


class AmqpEvents:
    """Publishes `mailing.<event>` to the events exchange; connects in the background so the
    API starts and serves even while the broker is down."""

    def __init__(self, amqp_url: str, namespace: str, publish_timeout_s: float = 2.0) -> None:
        self.amqp_url = amqp_url
        self.names = Names(namespace)
        self.publish_timeout_s = publish_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        pause = 0.5
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self.amqp_url,
                    client_properties={"connection_name": "api"},
                    reconnect_interval=RECONNECT_INTERVAL_S,
                )
                channel = await self._connection.channel(publisher_confirms=True)
                self._exchange = await channel.declare_exchange(
                    self.names.events, aio_pika.ExchangeType.TOPIC, durable=True
                )
                return
            except Exception as exc:
                log.warning("broker not reachable; events wait for it", error=str(exc)[:200])
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)

    def is_ready(self) -> bool:
        return (
            self._exchange is not None
            and self._connection is not None
            and (not self._connection.is_closed)
        )

    async def mailing_changed(self, event: str, mailing_id: int) -> None:
        # The request's span: linked to the mailing's trace (and passed on to the scheduler).
        tracing.link_to_mailing(mailing_id)
        if self._exchange is None:
            log.warning("event not published: broker not connected", mailing_id=mailing_id)
            return
        message = aio_pika.Message(
            json.dumps({"event": event, "mailing_id": mailing_id}).encode(),
            content_type="application/json",
            headers=dict(structlog.contextvars.get_contextvars())
            | {"mailing_id": mailing_id}
            | tracing.inject_current(),
        )
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self._exchange.publish(message, f"mailing.{event}")
        except Exception as exc:
            # PostgreSQL is the truth; the scheduler's poll picks the change up.
            log.warning("event not published", mailing_id=mailing_id, error=str(exc)[:200])

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            await self._connection.close()
