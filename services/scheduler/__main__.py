"""`python -m services.scheduler`: start due mailings, fan out, queue sends, sweep."""

from __future__ import annotations

import asyncio
import signal
import time

import structlog
import uvloop

from services.scheduler.retention import Retention
from services.scheduler.service import Scheduler, connect_broker
from shared import tracing
from shared.db import create_engine, create_session_factory, database_ready
from shared.logging import configure_logging
from shared.ops_server import start_ops_server
from shared.settings import SchedulerSettings

log = structlog.get_logger("scheduler")


async def main() -> None:
    settings = SchedulerSettings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure_tracing(tracing.SCHEDULER, settings.database_url, settings.amqp_namespace)
    engine = create_engine(settings)
    connection = await connect_broker(settings.amqp_url)
    retention = Retention(
        engine,
        retention_days=settings.message_retention_days,
        frequency_cap=settings.frequency_cap,
    )
    scheduler = Scheduler(settings, create_session_factory(engine), connection, retention=retention)
    await scheduler.setup()

    async def readiness() -> dict[str, bool]:
        database = await database_ready(engine)
        recent = time.monotonic() - scheduler.last_round_ok < 10 * settings.poll_interval_s + 30
        return {"database": database, "broker": not connection.is_closed, "loop": recent}

    ops = await start_ops_server("0.0.0.0", settings.metrics_port, readiness)  # noqa: S104
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.stop)
    log.info("scheduler started", metrics_port=settings.metrics_port)
    try:
        await scheduler.run()
    finally:
        await ops.cleanup()
        await connection.close()
        await engine.dispose()
        tracing.shutdown()
        log.info("scheduler stopped")


if __name__ == "__main__":
    uvloop.run(main())
