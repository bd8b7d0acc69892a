"""`python -m tests.pipeline.broken_sweep_scheduler`: the real scheduler whose sweep hangs
(`SWEEP_FAULT=hang`: every sweep statement waits for ever) or fails (`SWEEP_FAULT=fail`: every
one raises), for tests/pipeline/test_duties.py. Each time the fault strikes it logs "sweep
fault" so the test can see the sweep really was stuck while the mailing was sent."""

from __future__ import annotations

import asyncio
import os

import structlog
import uvloop
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import __main__ as scheduler_main
from services.scheduler import sweep

FAULT = os.environ.get("SWEEP_FAULT", "hang")
log = structlog.get_logger("scheduler")


async def broken_step(session: AsyncSession, limit: int) -> int:
    log.warning("sweep fault", fault=FAULT)
    if FAULT == "fail":
        raise RuntimeError("sweep made to fail by the test")
    await asyncio.Event().wait()
    return 0


sweep.cancel_chunk = broken_step
sweep.expire_chunk = broken_step

if __name__ == "__main__":
    uvloop.run(scheduler_main.main())
