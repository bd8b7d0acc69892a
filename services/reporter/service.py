"""Build and send one report, or loop: sleep until REPORT_AT (UTC), report the day before."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter import mailer, metrics, render
from services.reporter.schedule import Clock, SystemClock, next_run_at, report_day
from services.reporter.settings import ReporterSettings
from services.reporter.stats import DailyReport, collect

log = structlog.get_logger("reporter")

# The loop re-reads the clock at least this often, so a wall-clock jump never delays a report
# by more than this.
MAX_SLEEP_S = 60.0


class Reporter:
    def __init__(
        self, settings: ReporterSettings, engine: AsyncEngine, clock: Clock | None = None
    ) -> None:
        if not settings.report_recipients:
            raise ValueError("REPORT_RECIPIENTS is empty: set at least one address")
        self.settings = settings
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    async def send_report(self, day: date) -> DailyReport:
        """Collect the day's statistics and mail them; raises if either step fails."""
        with structlog.contextvars.bound_contextvars(report_day=day.isoformat()):
            try:
                report = await collect(self.engine, day)
                message = render.email(
                    report, self.settings.report_from, self.settings.report_recipients
                )
                refused = await mailer.send(self.settings, message)
            except Exception:
                metrics.REPORT_FAILURES.inc()
                raise
            metrics.REPORTS_SENT.inc()
            metrics.LAST_REPORT.set(time.time())
            if refused:
                log.warning("report refused for some recipients", refused=sorted(refused))
            log.info(
                "report sent",
                mailings=len(report.mailings),
                sent_in_day=report.sent_in_day,
                recipients=len(self.settings.report_recipients) - len(refused),
            )
            return report

    async def run(self, *, max_runs: int | None = None) -> None:
        """Until stopped (or after `max_runs` scheduled runs): report every day at REPORT_AT."""
        runs = 0
        while not self.stopping.is_set() and (max_runs is None or runs < max_runs):
            run_at = next_run_at(self.clock.now(), self.settings.report_at)
            log.info("next report", at=run_at.isoformat(), day=report_day(run_at).isoformat())
            while (remaining := (run_at - self.clock.now()).total_seconds()) > 0:
                if not await self._pause(min(remaining, MAX_SLEEP_S)):
                    return
            await self._send_with_retries(report_day(run_at))
            runs += 1

    async def _send_with_retries(self, day: date) -> None:
        attempts = self.settings.report_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.send_report(day)
                return
            except Exception:
                log.exception("report failed", day=day.isoformat(), attempt=attempt)
            if attempt < attempts and not await self._pause(self.settings.report_retry_s):
                return
        log.error("report given up", day=day.isoformat(), attempts=attempts)

    async def _pause(self, seconds: float) -> bool:
        """Sleep on the clock; False when stopped meanwhile."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
        return not self.stopping.is_set()
