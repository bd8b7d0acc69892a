"""A mailing goes out: to every matching client exactly once, on time, never after its end."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support.outcomes import may_have_reached_provider
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline


async def test_immediate_mailing_reaches_every_matching_client_once(pipeline: Pipeline) -> None:
    pipeline.seed_clients(300, tag="vip")
    pipeline.seed_clients(200, tag="other", first=1001)
    await pipeline.start()

    mailing = await pipeline.create_mailing(tags=["vip"], text="Sale today")
    counts = await pipeline.wait_terminal(mailing["id"], 300)
    await pipeline.wait_completed(mailing["id"])

    assert counts == {"sent": 300}
    delivered = pipeline.deliveries()
    assert len(delivered) == 300
    assert all(item["count"] == 1 for item in delivered.values())
    assert {item["text"] for item in delivered.values()} == {"Sale today"}
    assert all(str(item["phone"]).startswith("79") for item in delivered.values())
    phones = {item["phone"] for item in delivered.values()}
    assert phones == {int(f"79{n:09d}") for n in range(1, 301)}  # only the vip clients
    await pipeline.assert_stats_agree(mailing["id"])


async def test_future_mailing_starts_by_itself(pipeline: Pipeline) -> None:
    pipeline.seed_clients(50)
    await pipeline.start()

    mailing = await pipeline.create_mailing(starts_in=2.0)
    start_at = datetime.fromisoformat(mailing["start_at"]).timestamp()
    assert mailing["status"] == "scheduled"

    await pipeline.wait_terminal(mailing["id"], 50, timeout=30)
    first = min(item["first_at"] for item in pipeline.deliveries().values())
    assert first >= start_at, "nothing may be sent before the start time"
    assert pipeline.mailing_status(mailing["id"]) in ("running", "completed")


async def test_end_time_cuts_delivery_off(pipeline: Pipeline) -> None:
    pipeline.seed_clients(1500)
    pipeline.set_faults(latency_ms=100)
    # 10 connections at 100 ms each: about 100 messages/s, far too slow for 1,500 in 3 s.
    await pipeline.start(max_connections=10)

    mailing = await pipeline.create_mailing(ends_in=3.0)
    end_at = datetime.fromisoformat(mailing["end_at"]).timestamp()
    counts = await pipeline.wait_terminal(mailing["id"], 1500, timeout=60)

    delivered = pipeline.deliveries()
    assert delivered, "some messages go out before the end"
    assert max(item["last_at"] for item in delivered.values()) <= end_at
    assert set(counts) <= {"sent", "expired"}
    sent = {m["id"] for m in await _messages(pipeline, mailing["id"], "sent")}
    assert sent <= delivered.keys()
    # A request cut off by the end time may have reached the provider anyway: only those may
    # be delivered without being recorded as sent.
    unsure = {
        m["id"]
        for m in await _messages(pipeline, mailing["id"], "expired")
        if may_have_reached_provider(m["last_error"])
    }
    assert delivered.keys() - sent <= unsure
    await pipeline.wait_completed(mailing["id"])
    await pipeline.assert_stats_agree(mailing["id"])


async def test_provider_down_then_back_loses_nothing(pipeline: Pipeline) -> None:
    pipeline.seed_clients(400)
    pipeline.set_faults(down=True)
    sender_proc = pipeline.start_sender(breaker_failure_threshold=5)
    scheduler = pipeline.start_scheduler()
    await sender_proc.wait_ready()
    await scheduler.wait_ready()

    mailing = await pipeline.create_mailing()

    async def breaker_open() -> bool:
        return '"breaker open: stopped consuming"' in sender_proc.log_text()

    await wait_until(breaker_open, timeout=30, message="breaker open")
    requests_while_down = pipeline.stub_requests()
    pipeline.set_faults(down=False)

    counts = await pipeline.wait_terminal(mailing["id"], 400, timeout=90)
    assert counts == {"sent": 400}
    delivered = pipeline.deliveries()
    assert len(delivered) == 400 and all(i["count"] == 1 for i in delivered.values())
    # The breaker kept the sender from hammering a provider that was down.
    assert requests_while_down < 100
    await pipeline.assert_stats_agree(mailing["id"])


async def test_garbage_and_server_errors_are_retried(pipeline: Pipeline) -> None:
    pipeline.seed_clients(300)
    pipeline.set_faults(error_rate=0.3, garbage_rate=0.2)
    await pipeline.start(breaker_failure_threshold=1000)

    mailing = await pipeline.create_mailing()
    counts = await pipeline.wait_terminal(mailing["id"], 300, timeout=90)

    assert counts == {"sent": 300}
    assert len(pipeline.deliveries()) == 300
    stats = pipeline.stub.state.stats()
    assert stats["by_outcome"]["error"] > 0 and stats["by_outcome"]["garbage"] > 0
    await pipeline.assert_stats_agree(mailing["id"])


async def test_rejected_messages_fail_for_good(pipeline: Pipeline) -> None:
    pipeline.seed_clients(40)
    pipeline.set_faults(status_override=400)
    await pipeline.start()

    mailing = await pipeline.create_mailing()
    counts = await pipeline.wait_terminal(mailing["id"], 40)

    assert counts == {"failed": 40}
    assert pipeline.stub_requests() == 40, "a refused message is not retried"
    messages = (await pipeline.api.get(f"/mailings/{mailing['id']}/messages")).json()["items"]
    assert all("HTTP 400" in (m["last_error"] or "") for m in messages)
    await pipeline.wait_completed(mailing["id"])
    await pipeline.assert_stats_agree(mailing["id"])


async def _messages(pipeline: Pipeline, mailing_id: int, status: str) -> list[dict]:
    items: list[dict] = []
    after = 0
    while True:
        page = (
            await pipeline.api.get(
                f"/mailings/{mailing_id}/messages",
                params={"status": status, "after_id": after, "limit": 1000},
            )
        ).json()
        items += page["items"]
        if page["next_after_id"] is None:
            return items
        after = page["next_after_id"]


async def test_the_api_event_wakes_the_scheduler_at_once(pipeline: Pipeline) -> None:
    """With a 30 s poll, only the `mailing.created` event can start the mailing in seconds."""
    pipeline.seed_clients(10)
    scheduler = pipeline.start_scheduler(poll_interval_s=30)
    sender = pipeline.start_sender()
    await scheduler.wait_ready()
    await sender.wait_ready()

    # Let the scheduler finish its first round and fall asleep on the long poll.
    async def idle() -> bool:
        return "scheduler started" in scheduler.logged_events()

    await wait_until(idle, timeout=10, message="scheduler started")
    mailing = await pipeline.create_mailing()
    await pipeline.wait_terminal(mailing["id"], 10, timeout=10)
    assert "woken by event" in scheduler.logged_events()
