"""No scheduler duty starves another: with the sweep hung or failing, a mailing is still leased,
sent and counted in full (issue: a sweep timing out every ~32 s had cut sending to ~30 msg/s)."""

from __future__ import annotations

import time

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

CLIENTS = 3_000


@pytest.mark.parametrize("fault", ["hang", "fail"])
async def test_a_broken_sweep_does_not_stop_sending(pipeline: Pipeline, fault: str) -> None:
    pipeline.seed_clients(CLIENTS)
    scheduler = pipeline.processes.start(
        "scheduler", module="tests.pipeline.broken_sweep_scheduler", sweep_fault=fault
    )
    sender = pipeline.start_sender()
    await scheduler.wait_ready()
    await sender.wait_ready()

    # The sweep runs (and breaks) from the scheduler's first moments, before any mailing.
    async def broken() -> bool:
        return "sweep fault" in scheduler.logged_events()

    await wait_until(broken, timeout=30, message="sweep broken")
    started = time.monotonic()
    mailing = await pipeline.create_mailing()
    counts = await pipeline.wait_terminal(mailing["id"], CLIENTS, timeout=180)
    took = time.monotonic() - started
    print(f"sweep {fault}: {CLIENTS} messages in {took:.1f} s ({CLIENTS / took:.0f} msg/s)")

    assert counts == {"sent": CLIENTS}
    assert await pipeline.assert_stats_agree(mailing["id"]) == {"sent": CLIENTS}
    # Still broken throughout: the mailing went out beside it, not after it recovered.
    assert scheduler.logged_events().count("sweep fault") >= 1
    if fault == "fail":
        # A failing sweep backs off on its own and keeps trying; the round never failed.
        assert scheduler.logged_events().count("sweep fault") >= 2
    assert "scheduler round failed; retrying" not in scheduler.logged_events()
    # Completion is the sweep's: a broken sweep leaves the mailing running, nothing more.
    assert pipeline.mailing_status(mailing["id"]) == "running"
