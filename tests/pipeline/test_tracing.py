"""One mailing is one trace: the real api, scheduler and sender processes export over OTLP/HTTP
to a receiver run by this test (tests/support/otlp.py), and the spans of one mailing's
activation, fan-out, lease, publish, claims and provider requests share one trace id, each
under the span that led to it; the create request is its own trace, linked both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.pipeline.conftest import Pipeline
from tests.support.otlp import OtlpSink, ReceivedSpan
from tests.support.rig.processes import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

CLIENTS = 120


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    sink = await OtlpSink().start()
    try:
        yield sink
    finally:
        await sink.close()


def _otel_env(sink: OtlpSink) -> dict[str, object]:
    return {
        "otel_exporter_otlp_endpoint": sink.url,
        "otel_traces_sampler": "parentbased_always_on",
        # Export within a fraction of a second, so the test need not wait for the default 5 s.
        "otel_bsp_schedule_delay": 100,
    }


async def test_one_mailing_reads_as_one_trace(pipeline: Pipeline, sink: OtlpSink) -> None:
    pipeline.seed_clients(CLIENTS)
    api_port = free_port()
    procs = [
        pipeline.start_scheduler(**_otel_env(sink)),
        # Several jobs, and claim batches that span jobs, so the links have something to show.
        pipeline.start_sender(**_otel_env(sink), batch_size=25, batch_linger_ms=20),
        pipeline.processes.start(
            "api",
            api_host="127.0.0.1",
            api_port=api_port,
            api_tokens=ADMIN_TOKEN,
            **_otel_env(sink),
        ),
    ]
    for proc in procs:
        # Three processes starting at once on this shared, loaded machine.
        await proc.wait_ready(timeout=90)

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{api_port}/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as api:
        response = await api.post(
            "/mailings",
            json={
                "start_at": "2020-01-01T00:00:00+00:00",
                "end_at": "2999-01-01T00:00:00+00:00",
                "text": "Follow me",
            },
        )
        assert response.status_code == 201, response.text
        mailing_id = response.json()["id"]
        audit = await api.get(
            "/audit", params={"target_type": "mailing", "target_id": str(mailing_id)}
        )
    assert audit.status_code == 200, audit.text
    (audited,) = audit.json()["items"]
    assert await pipeline.wait_terminal(mailing_id, CLIENTS) == {"sent": CLIENTS}
    with pipeline.db() as conn:
        message_ids = {
            row[0]
            for row in conn.execute("SELECT id FROM message WHERE mailing_id = %s", (mailing_id,))
        }

    async def all_requested() -> bool:
        # A claim batch's span ends (and is exported) after its requests' spans.
        exported = {s.span_id for s in sink.spans}
        return requested() >= message_ids and all(
            s.parent_id in exported for s in sink.spans if s.parent_id is not None
        )

    def requested() -> set[object]:
        return {
            s.attributes.get("message.id")
            for s in sink.spans
            if s.name == "POST /send/{msgId}" and s.attributes.get("mailing.id") == mailing_id
        }

    await wait_until(all_requested, timeout=30, message="every provider request and its parents")

    (activation,) = [
        s for s in sink.by_name("mailing activate") if s.attributes.get("mailing.id") == mailing_id
    ]
    assert activation.service == "mailing-scheduler"
    assert activation.parent_id is None, "the activation is the root of the mailing's trace"
    spans = sink.in_trace(activation.trace_id)
    by_id = {s.span_id: s for s in spans}

    def named(name: str) -> list[ReceivedSpan]:
        return [s for s in spans if s.name == name]

    def parents(children: list[ReceivedSpan]) -> set[str | None]:
        return {s.parent_id for s in children}

    chunks, leases = named("mailing fan-out chunk"), named("mailing lease")
    publishes = [s for s in spans if s.name.startswith("publish ")]
    batches, requests = named("claim batch"), named("POST /send/{msgId}")
    assert chunks and leases and publishes and batches and requests
    assert sum(s.attributes["mailing.messages.created"] for s in chunks) == CLIENTS
    assert sum(s.attributes["mailing.messages.leased"] for s in leases) >= CLIENTS
    # The scheduler's spans hang under the activation...
    assert parents(chunks) == parents(leases) == parents(publishes) == {activation.span_id}
    assert {s.service for s in chunks + leases + publishes} == {"mailing-scheduler"}
    assert all(s.kind == 4 for s in publishes)  # PRODUCER
    # ... the sender's claims under a publish span (through the AMQP headers) ...
    assert parents(batches) <= {s.span_id for s in publishes}
    assert {s.service for s in batches + requests} == {"mailing-sender"}
    # ... and each provider request under its claim batch.
    assert parents(requests) <= {s.span_id for s in batches}
    assert {s.attributes["message.id"] for s in requests} == message_ids
    assert all(s.kind == 3 for s in requests)  # CLIENT
    sample = requests[0].attributes
    assert sample["http.request.method"] == "POST"
    assert sample["url.full"].endswith(f"/send/{sample['message.id']}")
    assert sample["mailing.send.outcome"] == "sent"
    assert sample["http.response.status_code"] == 200
    # No span of the trace points at a parent the trace does not have.
    assert all(s.parent_id is None or s.parent_id in by_id for s in spans)
    assert [s for s in spans if s.parent_id is None] == [activation]

    # The create request: a trace of its own (the API's FastAPI server span), linked both ways.
    (created,) = [
        s
        for s in sink.by_name("POST /api/v1/mailings")
        if s.attributes.get("mailing.id") == mailing_id
    ]
    assert created.service == "mailing-api"
    assert created.trace_id != activation.trace_id
    assert (activation.trace_id, activation.span_id) in created.links
    # Whether the scheduler started it on the event or on its own poll: the activation finds
    # the request in the mailing's audit entry, which also names the request's trace.
    assert (created.trace_id, created.span_id) in activation.links
    assert audited["trace_id"] == created.trace_id
    assert created.attributes["http.response.status_code"] == 201

    # Stopped while the receiver still listens: each process flushes what it holds and exits
    # cleanly, with no export error and no error line in its log.
    spans_before_stop = len(sink.spans)
    codes = [await proc.astop() for proc in procs]
    # uvicorn re-raises the SIGTERM it handled, after its graceful shutdown.
    assert codes[:2] == [0, 0] and codes[2] in (0, -15), pipeline.all_logs()
    assert len(sink.spans) >= spans_before_stop
    logs = pipeline.all_logs()
    assert not [name for name, text in logs.items() if "Failed to export" in text]
    assert pipeline.error_lines() == []
