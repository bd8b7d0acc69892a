"""A provider failing at random (not as a whole): the tail of delivery stays short.

The shipped retry ladder is used here (not the pipeline's short test ladder): an isolated 500
or garbage 200 must be retried within seconds, so nearly every message is out within half a
minute. Long waits are for a provider that fails as a whole: that is the breaker's (see
test_delivery.py::test_provider_down_then_back_loses_nothing for its request bound).
"""

from __future__ import annotations

import time

import pytest

from shared.domain.retry import DEFAULT_RETRY_DELAYS_S
from tests.pipeline.conftest import Pipeline
from tests.support.broker import delete_namespace

pytestmark = pytest.mark.pipeline

CLIENTS = 1000


async def test_random_failures_leave_a_short_tail(pipeline: Pipeline) -> None:
    pipeline.seed_clients(CLIENTS)
    # 40% of the answers fail, independently: half of them a 500, half a garbage 200.
    pipeline.set_faults(error_rate=0.2, garbage_rate=0.2)
    ladder = ",".join(str(d) for d in DEFAULT_RETRY_DELAYS_S)
    try:
        await pipeline.start(retry_delays_s=ladder)
        created_at = time.time()
        mailing = await pipeline.create_mailing()
        counts = await pipeline.wait_terminal(mailing["id"], CLIENTS, timeout=180)

        assert counts == {"sent": CLIENTS}
        delivered = pipeline.deliveries()
        assert len(delivered) == CLIENTS
        assert all(d["count"] == 1 for d in delivered.values()), "duplicates"
        after = sorted(d["first_at"] - created_at for d in delivered.values())
        p99 = after[int(0.99 * CLIENTS) - 1]
        stats = pipeline.stub.state.stats()
        print(
            f"40% random failures, {CLIENTS} messages: p50 {after[CLIENTS // 2]:.1f} s,"
            f" p99 {p99:.1f} s, last {after[-1]:.1f} s, requests {pipeline.stub_requests()},"
            f" outcomes {stats['by_outcome']}"
        )
        assert p99 <= 30, f"99% delivered after {p99:.1f} s"
        assert after[-1] <= 120, f"last delivered after {after[-1]:.1f} s"
        await pipeline.assert_stats_agree(mailing["id"])
    finally:
        pipeline.processes.stop_all()
        await delete_namespace(pipeline.namespace, list(DEFAULT_RETRY_DELAYS_S))
