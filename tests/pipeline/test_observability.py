"""Logs tell a message's whole story by its id; metrics are where the docs say."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.pipeline.conftest import Pipeline

pytestmark = pytest.mark.pipeline


def _json_lines(text: str) -> list[dict]:
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


async def test_a_message_can_be_followed_through_the_logs(pipeline: Pipeline) -> None:
    pipeline.seed_clients(200)
    # Some garbage answers, so some messages have retries in their story.
    pipeline.set_faults(garbage_rate=0.3)
    scheduler = pipeline.start_scheduler()
    sender = pipeline.start_sender(breaker_failure_threshold=1000)
    await scheduler.wait_ready()
    await sender.wait_ready()

    now_body = await pipeline.create_mailing()
    counts = await pipeline.wait_terminal(now_body["id"], 200, timeout=60)
    assert counts == {"sent": 200}
    logs = _json_lines(scheduler.log_text()) + _json_lines(sender.log_text())

    retried = {
        line["message_id"] for line in logs if line.get("event") == "message will be retried"
    }
    assert retried, "with 30% garbage some messages are retried"
    message_id = min(retried)
    story = [line["event"] for line in logs if line.get("message_id") == message_id]
    assert story[0] == "message queued"
    assert "message will be retried" in story
    assert story[-1] == "provider accepted message"
    retry_line = next(
        line
        for line in logs
        if line.get("message_id") == message_id and line["event"] == "message will be retried"
    )
    assert "200 with unexpected body" in retry_line["error"]
    assert {"mailing_id", "client_id", "latency_ms"} <= retry_line.keys()


async def test_request_id_travels_from_api_to_sender(pipeline: Pipeline) -> None:
    pipeline.seed_clients(20)
    await pipeline.start()
    response = await pipeline.api.post(
        "/mailings",
        headers={"X-Request-ID": "req-trace-42"},
        json={
            "start_at": "2020-01-01T00:00:00+00:00",
            "end_at": "2999-01-01T00:00:00+00:00",
            "text": "Trace me",
        },
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-trace-42"
    await pipeline.wait_terminal(response.json()["id"], 20)
    sender_logs = _json_lines(pipeline.processes.started[1].log_text())
    traced = [line for line in sender_logs if line.get("request_id") == "req-trace-42"]
    assert len([line for line in traced if line["event"] == "provider accepted message"]) == 20


async def test_logs_hold_no_secrets_and_no_full_phones(pipeline: Pipeline) -> None:
    pipeline.seed_clients(30)
    await pipeline.start()
    mailing = await pipeline.create_mailing()
    await pipeline.wait_terminal(mailing["id"], 30)
    everything = "\n".join(proc.log_text() for proc in pipeline.processes.started)
    assert "stub-token" not in everything
    assert ADMIN_TOKEN not in everything
    assert "79000000001" not in everything


async def test_every_service_exposes_its_metrics(pipeline: Pipeline) -> None:
    pipeline.seed_clients(10)
    await pipeline.start()
    mailing = await pipeline.create_mailing()
    await pipeline.wait_terminal(mailing["id"], 10)
    scheduler, sender = pipeline.processes.started
    async with httpx.AsyncClient() as client:
        scheduler_metrics = (await client.get(f"{scheduler.metrics_url}/metrics")).text
        sender_metrics = (await client.get(f"{sender.metrics_url}/metrics")).text
    api_metrics = (await pipeline.api.get("http://api.test/metrics")).text
    for name in (
        "mailing_mailings_started_total",
        "mailing_messages_created_total",
        "mailing_messages_queued_total",
        "mailing_backlog_messages",
        "mailing_live_leases",
    ):
        assert name in scheduler_metrics
    for name in (
        'mailing_message_outcomes_total{outcome="sent"} 10.0',
        'mailing_provider_requests_total{outcome="sent"} 10.0',
        "mailing_provider_request_seconds_bucket",
        "mailing_breaker_state 0.0",
        "mailing_provider_token_expiry_timestamp_seconds",
    ):
        assert name in sender_metrics
    assert 'mailing_api_requests_total{method="POST",route="/api/v1/mailings",status="201"}' in (
        api_metrics
    )
