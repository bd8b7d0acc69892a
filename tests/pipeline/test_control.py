"""Pause, resume, cancel, delete and send windows take effect on a mailing in flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline


async def _sent_at_least(pipeline: Pipeline, n: int) -> None:
    async def enough() -> bool:
        return len(pipeline.deliveries()) >= n

    await wait_until(enough, timeout=30, message=f"{n} deliveries")


async def _deliveries_settle(pipeline: Pipeline, quiet_s: float = 1.0) -> int:
    """Wait until the stub receives nothing new for `quiet_s`; return the count then."""
    loop_time = datetime.now
    last = len(pipeline.deliveries())
    quiet_since = loop_time()

    async def quiet() -> int | None:
        nonlocal last, quiet_since
        now_count = len(pipeline.deliveries())
        if now_count != last:
            last, quiet_since = now_count, loop_time()
            return None
        return now_count if (loop_time() - quiet_since).total_seconds() >= quiet_s else None

    return await wait_until(quiet, timeout=20, message="deliveries to stop")


async def test_pause_stops_delivery_and_resume_continues(pipeline: Pipeline) -> None:
    pipeline.seed_clients(1500)
    pipeline.set_faults(latency_ms=50)
    await pipeline.start(max_connections=10)
    mailing = await pipeline.create_mailing()
    await _sent_at_least(pipeline, 100)

    paused_at = datetime.now(UTC)
    assert (await pipeline.api.post(f"/mailings/{mailing['id']}/pause")).status_code == 200
    stopped_with = await _deliveries_settle(pipeline)
    # Only requests already under way (at most the sender's 10 connections) may land after.
    late = [
        d for d in pipeline.deliveries().values() if d["first_at"] > paused_at.timestamp() + 1.0
    ]
    assert late == [], "nothing is sent more than a second after the pause"
    assert stopped_with < 1500
    assert pipeline.mailing_status(mailing["id"]) == "paused"

    assert (await pipeline.api.post(f"/mailings/{mailing['id']}/resume")).status_code == 200
    counts = await pipeline.wait_terminal(mailing["id"], 1500, timeout=90)
    assert counts == {"sent": 1500}
    assert all(d["count"] == 1 for d in pipeline.deliveries().values())
    await pipeline.wait_completed(mailing["id"])
    await pipeline.assert_stats_agree(mailing["id"])


async def test_delete_stops_delivery_and_cancels_the_rest(pipeline: Pipeline) -> None:
    pipeline.seed_clients(1500)
    pipeline.set_faults(latency_ms=50)
    await pipeline.start(max_connections=10)
    mailing = await pipeline.create_mailing()
    await _sent_at_least(pipeline, 100)

    deleted_at = datetime.now(UTC)
    assert (await pipeline.api.delete(f"/mailings/{mailing['id']}")).status_code == 204
    await _deliveries_settle(pipeline)
    late = [
        d for d in pipeline.deliveries().values() if d["first_at"] > deleted_at.timestamp() + 1.0
    ]
    assert late == []
    counts = await pipeline.wait_terminal(mailing["id"], 1500, timeout=30)
    assert set(counts) == {"sent", "cancelled"}
    assert counts["sent"] == len(pipeline.deliveries())
    assert (await pipeline.api.get(f"/mailings/{mailing['id']}/stats")).status_code == 404


async def test_cancel_stops_delivery_and_keeps_the_mailing_with_its_stats(
    pipeline: Pipeline,
) -> None:
    pipeline.seed_clients(1500)
    pipeline.set_faults(latency_ms=50)
    await pipeline.start(max_connections=10)
    mailing = await pipeline.create_mailing()
    await _sent_at_least(pipeline, 100)

    cancelled_at = datetime.now(UTC)
    response = await pipeline.api.post(f"/mailings/{mailing['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    await _deliveries_settle(pipeline)
    late = [
        d for d in pipeline.deliveries().values() if d["first_at"] > cancelled_at.timestamp() + 1.0
    ]
    assert late == []
    counts = await pipeline.wait_terminal(mailing["id"], 1500, timeout=30)
    assert set(counts) == {"sent", "cancelled"}
    assert counts["sent"] == len(pipeline.deliveries())
    stats = await pipeline.api.get(f"/mailings/{mailing['id']}/stats")
    assert stats.status_code == 200 and stats.json()["status"] == "cancelled"
    assert {k: v for k, v in stats.json()["counts"].items() if v} == counts
    await pipeline.assert_stats_agree(mailing["id"])


async def test_send_window_respects_client_time_zones(pipeline: Pipeline) -> None:
    # A two-hour window around the current UTC time: open for UTC clients, closed for clients
    # twelve hours ahead (Etc/GMT-12 is UTC+12 all year).
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }
    pipeline.seed_clients(100, timezone="UTC")
    pipeline.seed_clients(100, timezone="Etc/GMT-12", first=1001)
    await pipeline.start()

    mailing = await pipeline.create_mailing(ends_in=6.0, send_window=window)
    counts = await pipeline.wait_terminal(mailing["id"], 200, timeout=60)

    assert counts == {"sent": 100, "expired": 100}
    phones = {d["phone"] for d in pipeline.deliveries().values()}
    assert phones == {int(f"79{n:09d}") for n in range(1, 101)}, "only UTC clients get it"
    await pipeline.assert_stats_agree(mailing["id"])


async def test_closed_window_waits_for_the_next_opening(pipeline: Pipeline) -> None:
    """Messages outside the window stay pending with `not_before` at the next opening."""
    now = datetime.now(UTC)
    window = {
        "start": (now + timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
    }
    pipeline.seed_clients(20, timezone="UTC")
    await pipeline.start()
    mailing = await pipeline.create_mailing(send_window=window)

    async def created() -> bool:
        return pipeline.message_counts(mailing["id"]).get("pending") == 20

    await wait_until(created, timeout=20, message="messages created")
    messages = (await pipeline.api.get(f"/mailings/{mailing['id']}/messages")).json()["items"]
    opening = (now + timedelta(hours=2)).replace(second=0, microsecond=0)
    for message in messages:
        not_before = datetime.fromisoformat(message["not_before"])
        assert abs((not_before - opening).total_seconds()) < 60
    assert pipeline.deliveries() == {}
