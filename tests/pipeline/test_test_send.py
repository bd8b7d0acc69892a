"""Test sends through the real scheduler, sender and provider stub: the provider fails first,
the test still ends `sent` exactly once; the mailing's status, send window and counters never
come into it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

PHONE = "79990001122"


async def _test_message(pipeline: Pipeline, mailing_id: int, message_id: int) -> dict[str, Any]:
    response = await pipeline.api.get(f"/mailings/{mailing_id}/tests/{message_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _wait_for(
    pipeline: Pipeline, mailing_id: int, message_id: int, what: str, done: Any
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        test = await _test_message(pipeline, mailing_id, message_id)
        return test if done(test) else None

    test = await wait_until(check, timeout=60, interval=0.1, message=what)
    assert test is not None
    return test


async def test_a_test_send_through_a_failing_provider_is_sent_once_after_retries(
    pipeline: Pipeline,
) -> None:
    pipeline.seed_clients(20)
    # A breaker that opens after two failures: the test meets it too.
    await pipeline.start(breaker_failure_threshold=2)
    mailing = await pipeline.create_mailing(text="Скидка 20% до воскресенья")
    mailing_id = mailing["id"]
    await pipeline.wait_completed(mailing_id)
    stats_before = (await pipeline.api.get(f"/mailings/{mailing_id}/stats")).json()
    delivered_before = pipeline.deliveries()

    # The provider answers 500, then a garbage 200, then OK again.
    pipeline.set_faults(error_rate=1.0)
    response = await pipeline.api.post(f"/mailings/{mailing_id}/test", json={"phone": PHONE})
    assert response.status_code == 202, response.text
    test_id = response.json()["id"]
    await _wait_for(pipeline, mailing_id, test_id, "a 500", lambda t: t["attempts"] >= 1)
    pipeline.set_faults(error_rate=0.0, garbage_rate=1.0)
    await _wait_for(pipeline, mailing_id, test_id, "a garbage 200", lambda t: t["attempts"] >= 2)
    pipeline.set_faults(garbage_rate=0.0)
    test = await _wait_for(pipeline, mailing_id, test_id, "sent", lambda t: t["status"] == "sent")

    assert test["attempts"] >= 3 and test["last_error"]
    delivered = pipeline.deliveries()
    assert delivered[test_id]["count"] == 1, "delivered once"
    assert str(delivered[test_id]["phone"]) == PHONE
    assert delivered[test_id]["text"] == "Скидка 20% до воскресенья"
    # Nothing else went out, and the completed mailing's statistics did not move.
    assert set(delivered) - set(delivered_before) == {test_id}
    stats_after = (await pipeline.api.get(f"/mailings/{mailing_id}/stats")).json()
    assert stats_after["counts"] == stats_before["counts"]
    assert stats_after["total"] == stats_before["total"] == 20
    assert pipeline.mailing_status(mailing_id) == "completed"
    await pipeline.assert_stats_agree(mailing_id)
    # Two failures in a row opened the breaker; the test waited it out like any message.
    assert "provider failing; breaker open" in "\n".join(pipeline.all_logs().values())
    assert not pipeline.error_lines()


async def test_a_test_of_a_scheduled_mailing_with_a_closed_window_goes_now(
    pipeline: Pipeline,
) -> None:
    pipeline.seed_clients(5)
    await pipeline.start()
    now = datetime.now(UTC)
    closed = {
        "start": (now + timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
    }
    mailing = await pipeline.create_mailing(
        starts_in=3600, ends_in=7200, send_window=closed, text="Soon"
    )
    mailing_id = mailing["id"]
    asked = time.monotonic()
    response = await pipeline.api.post(f"/mailings/{mailing_id}/test", json={"phone": PHONE})
    assert response.status_code == 202, response.text
    test_id = response.json()["id"]
    test = await _wait_for(pipeline, mailing_id, test_id, "sent", lambda t: t["status"] == "sent")
    print(f"test send of a scheduled mailing: sent {time.monotonic() - asked:.2f} s after asking")

    assert test["attempts"] == 1
    assert pipeline.deliveries()[test_id]["text"] == "Soon"
    # The mailing has not started: no message of its own, nothing else sent.
    assert pipeline.mailing_status(mailing_id) == "scheduled"
    assert pipeline.message_counts(mailing_id) == {}
    assert set(pipeline.deliveries()) == {test_id}
