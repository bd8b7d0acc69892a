"""`python -m services.sender`: deliver send jobs through the provider."""

from __future__ import annotations

import asyncio
import signal

import aio_pika
import structlog
import uvloop

from services.sender.breaker import State
from services.sender.provider import ProviderClient, TokenSource
from services.sender.routing import Router
from services.sender.service import Sender
from shared import tracing
from shared.db import create_engine, create_session_factory, database_ready
from shared.logging import configure_logging
from shared.messaging import RECONNECT_INTERVAL_S
from shared.ops_server import start_ops_server
from shared.providers import providers_source
from shared.settings import SenderSettings

log = structlog.get_logger("sender")


async def main() -> None:
    settings = SenderSettings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure_tracing(tracing.SENDER, settings.database_url, settings.amqp_namespace)
    engine = create_engine(settings)
    connection = await aio_pika.connect_robust(
        settings.amqp_url,
        client_properties={"connection_name": "sender"},
        reconnect_interval=RECONNECT_INTERVAL_S,
    )
    static_token = settings.provider_token.get_secret_value() if settings.provider_token else None
    tokens = TokenSource(static_token, settings.provider_token_file)
    provider = ProviderClient(
        settings.provider_url,
        tokens,
        timeout_s=settings.provider_timeout_s,
        max_connections=settings.max_connections,
    )
    sessions = create_session_factory(engine)
    # PROVIDERS_FILE: routes and providers of every kind; without it, today's one provider.
    router = (
        Router(settings, providers_source(settings), sessions)
        if settings.providers_file is not None
        else None
    )
    sender = Sender(settings, sessions, connection, provider, router)
    await sender.setup()

    async def readiness() -> dict[str, bool]:
        database = await database_ready(engine)
        # A consumer paused by the open breaker is deliberate: a restart would not fix the
        # provider, so it does not make the sender unready.
        consumer = sender.consuming or sender.breaker.state != State.CLOSED
        return {"database": database, "broker": not connection.is_closed, "consumer": consumer}

    ops = await start_ops_server("0.0.0.0", settings.metrics_port, readiness)  # noqa: S104
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sender.stopping.set)
    log.info(
        "sender started", provider_url=settings.provider_url, metrics_port=settings.metrics_port
    )
    try:
        await sender.run()
    finally:
        await ops.cleanup()
        await provider.close()
        await connection.close()
        await engine.dispose()
        tracing.shutdown()
        log.info("sender stopped")


if __name__ == "__main__":
    uvloop.run(main())
