"""`python -m services.reporter [--once [--date YYYY-MM-DD]]`: the daily statistics e-mail.

Without flags it runs until stopped and reports the previous UTC day every day at REPORT_AT.
`--once` reports one day now and exits (non-zero on failure), as a Kubernetes CronJob does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import UTC, date, datetime

import structlog

from services.reporter.schedule import report_day
from services.reporter.service import Reporter
from services.reporter.settings import ReporterSettings
from shared.db import create_engine, database_ready
from shared.logging import configure_logging
from shared.ops_server import start_ops_server

log = structlog.get_logger("reporter")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.reporter", description=__doc__)
    parser.add_argument("--once", action="store_true", help="send one report now and exit")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        help="the UTC day to report (YYYY-MM-DD; with --once; default: yesterday)",
    )
    args = parser.parse_args(argv)
    if args.date is not None and not args.once:
        parser.error("--date needs --once")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = ReporterSettings()
    configure_logging(settings.log_level, settings.log_format)
    engine = create_engine(settings, pool_size=1)
    try:
        reporter = Reporter(settings, engine)
        if args.once:
            day = args.date or report_day(datetime.now(UTC))
            try:
                await reporter.send_report(day)
            except Exception:
                log.exception("report failed", day=day.isoformat())
                return 1
            return 0
        return await _serve(settings, reporter)
    finally:
        await engine.dispose()


async def _serve(settings: ReporterSettings, reporter: Reporter) -> int:
    async def readiness() -> dict[str, bool]:
        return {"database": await database_ready(reporter.engine)}

    ops = await start_ops_server("0.0.0.0", settings.metrics_port, readiness)  # noqa: S104
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reporter.stop)
    log.info("reporter started", report_at=settings.report_at.isoformat("minutes"))
    try:
        await reporter.run()
    finally:
        await ops.cleanup()
        log.info("reporter stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
