"""Each sender's breaker state in the `provider_status` table, for the console's dashboard.

`observe()` is called from the breaker watcher (every 0.1 s); it writes only when the state
changes or every REPORT_EVERY_S, in a task of its own, so a slow database never holds the
watcher up and a failed write costs nothing but a log line.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender.breaker import Breaker
from shared.models import ProviderStatus

log = structlog.get_logger("sender.status")

# Also the heartbeat that shares each provider's max_tps among the live senders
# (services.sender.routing): well under SENDER_HEARTBEAT_TTL_S.
REPORT_EVERY_S = 2.0
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


class _Reporter:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.last: tuple[str, str] | None = None
        self.last_at = 0.0
        self.task: asyncio.Task[None] | None = None

    def observe(self, breaker: Breaker) -> None:
        current = (breaker.state.name.lower(), breaker.reason)
        now = time.monotonic()
        if current == self.last and now - self.last_at < REPORT_EVERY_S:
            return
        if self.task is not None and not self.task.done():
            return
        self.last, self.last_at = current, now
        self.task = asyncio.create_task(self._write(*current), name="status-report")

    async def _write(self, state: str, reason: str) -> None:
        values = {"instance": INSTANCE, "breaker_state": state, "reason": reason}
        statement = insert(ProviderStatus).values({**values, "reported_at": func.now()})
        statement = statement.on_conflict_do_update(
            index_elements=["instance"],
            set_={"breaker_state": state, "reason": reason, "reported_at": func.now()},
        )
        try:
            async with self.sessions() as session:
                await session.execute(statement)
                await session.commit()
        except Exception as exc:
            self.last = None  # try again on the next observation
            log.warning("could not report the breaker state", error=str(exc)[:200])


_reporters: dict[int, _Reporter] = {}


def observe(sessions: async_sessionmaker[AsyncSession], breaker: Breaker) -> None:
    reporter = _reporters.get(id(sessions))
    if reporter is None:
        reporter = _reporters[id(sessions)] = _Reporter(sessions)
    reporter.observe(breaker)
